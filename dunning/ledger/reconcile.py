"""Reconcile: bring our customers and invoices in line with a snapshot (new, changed, settled,
reopened), resume the pauses that ended, and keep the figures the mass-settlement guard learns
from."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Date,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.business_days import business_days_between
from dunning.coltypes import Money, UTCDateTime, utcnow
from dunning.db import chunks, saved_id, table_of
from dunning.errors import MassSettlement
from dunning.ledger.outbox import drop_from_undelivered
from dunning.ledger.transitions import transition_row
from dunning.mass_settlement import Book, Settled, objection
from dunning.models import Customer, Invoice, Run, Transition
from dunning.policy import Policy
from dunning.shards import Shard, in_shard
from dunning.sources.snapshot import CustomerRow, Snapshot
from dunning.staging import Staged, stage_snapshot, staged_table
from dunning.staging import drop as drop_staged
from dunning.statuses import InvoiceState, TransitionEvent


@dataclass
class ReconcileResult:
    customers_new: int = 0
    customers_updated: int = 0
    invoices_new: int = 0
    invoices_updated: int = 0
    settled: int = 0
    reopened: int = 0
    resumed: int = 0
    actions_cancelled: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


_CUSTOMER_FIELDS = ("name", "email", "phone", "language", "country", "credit_limit", "segment",
                    "collector", "address", "legal_id")


def _customer_values(row: CustomerRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _CUSTOMER_FIELDS}


def reconcile(session: Session, snapshot: Snapshot | Staged, as_of: date, run_id: str | None,
              policy: Policy | None = None, shard: Shard | None = None, *,
              accept_mass_settlement: bool = False) -> ReconcileResult:
    """Insert new customers and invoices, update changed ones, settle what is gone or paid.
    With a policy, refuses (and so changes nothing) a snapshot whose settlements do not look
    like a day of payments (`dunning.mass_settlement`), unless `accept_mass_settlement`; the
    run's settled figures are recorded on its row either way, as the guard's history.

    The invoices are compared in SQL against a staging table (`dunning.staging`): a `Staged`
    snapshot's own, or a scratch one made here for an in-memory `Snapshot` and dropped with
    the transaction's work.

    With a shard, the snapshot holds only the shard's customers and invoices (`Shard.split`,
    or staged for the shard), and only the shard's customers' invoices are settled, counted and
    resumed."""
    if isinstance(snapshot, Snapshot):
        staged = stage_snapshot(session.connection(), snapshot, shard)
        try:
            return reconcile(session, staged, as_of, run_id, policy, shard,
                             accept_mass_settlement=accept_mass_settlement)
        finally:
            drop_staged(session.connection(), staged.table)
    result = ReconcileResult()
    now = utcnow()
    book = _open_book(session, shard)
    _reconcile_customers(session, snapshot.customers, result, now)
    s = staged_table(snapshot.table)
    changes = _read_known_invoices(session, s, now)
    result.invoices_new = _add_new_invoices(session, s, as_of, now)
    result.invoices_updated = _update_invoices(session, changes.updates)
    # An invoice booked to another customer leaves the old customer's messages and call tasks.
    result.actions_cancelled += drop_from_undelivered(
        session, changes.moved, f"moved to another customer on {as_of}", now)
    _read_absent_invoices(session, s, shard, changes)
    today, why = _guard(session, changes, book, snapshot.seen == 0, as_of, shard, policy,
                        accept_mass_settlement)
    _record_settled(session, run_id, today, why is not None)
    result.settled = len(changes.settle)
    result.actions_cancelled += _settle(session, changes.settle, as_of, run_id, now)
    result.reopened = len(changes.reopen)
    _set_state(session, changes.reopen, TransitionEvent.REOPENED, InvoiceState.ACTIVE, as_of,
               run_id, now, reason="reopened")
    result.resumed = _resume_expired_pauses(session, as_of, run_id, now, shard)
    return result


@dataclass
class _Changes:
    """What the snapshot changes in the invoices we know; (id, stage, detail) to settle or
    reopen."""

    updates: list[dict[str, Any]] = field(default_factory=list)
    moved: list[int] = field(default_factory=list)
    settle: list[tuple[int, str | None, str]] = field(default_factory=list)
    reopen: list[tuple[int, str | None, str]] = field(default_factory=list)
    settled_customers: set[int] = field(default_factory=set)
    settled_amount: Decimal = Decimal(0)


def _read_known_invoices(session: Session, s: Table, now: datetime) -> _Changes:
    """Known invoices that changed, read before the new ones are added (which they cannot be)."""
    i = table_of(Invoice)
    c = table_of(Customer)
    # What the agency collected may not be booked yet, so it still counts as paid: the
    # ledger's open amount is at most amount - collected.
    left = type_coerce(s.c.amount - i.c.agency_collected, Money())
    capped = case((s.c.amount_open < left, s.c.amount_open), else_=left)
    open_now = type_coerce(case(
        (i.c.agency_collected > 0, case((capped > 0, capped), else_=literal(0, Money()))),
        else_=s.c.amount_open), Money())
    changed = or_(
        i.c.customer_id != c.c.id, i.c.number.is_distinct_from(s.c.number),
        i.c.issue_date.is_distinct_from(s.c.issue_date), i.c.due_date != s.c.due_date,
        i.c.currency != s.c.currency, i.c.amount != s.c.amount, i.c.amount_open != open_now)
    known = s.join(i, i.c.external_id == s.c.external_id) \
        .join(c, c.c.external_id == s.c.customer_external_id)
    changes = _Changes()
    for row in session.execute(
        select(i.c.id, i.c.customer_id.label("old_customer"), i.c.state, i.c.stage,
               i.c.amount_open.label("ledger_open"),
               c.c.id.label("customer_id"), s.c.number, s.c.issue_date, s.c.due_date,
               s.c.currency, s.c.amount, s.c.amount_open.label("snapshot_open"),
               open_now.label("amount_open"), changed.label("changed"))
        .select_from(known)
        .where(s.c.valid, or_(changed, and_(i.c.state != InvoiceState.CLOSED, open_now == 0),
                              and_(i.c.state == InvoiceState.CLOSED, open_now != 0)))
        .order_by(s.c.line)
    ):
        if row.changed:
            changes.updates.append({
                "b_id": row.id, "customer_id": row.customer_id, "number": row.number,
                "issue_date": row.issue_date, "due_date": row.due_date,
                "currency": row.currency, "amount": row.amount, "amount_open": row.amount_open,
                # Its facts changed: the next evaluation looks at it again.
                "updated_at": now, "review_on": None})
            if row.old_customer != row.customer_id:
                changes.moved.append(row.id)
        if row.state != InvoiceState.CLOSED and row.amount_open == 0:
            changes.settle.append((row.id, row.stage, "nothing open in the snapshot"
                                   if row.snapshot_open == 0 else "collected by the agency"))
            changes.settled_customers.add(row.old_customer)
            changes.settled_amount += row.ledger_open
        elif row.state == InvoiceState.CLOSED and row.amount_open != 0:
            changes.reopen.append((row.id, row.stage, f"back in the snapshot with "
                                   f"{row.snapshot_open} {row.currency} open"))
    return changes


def _add_new_invoices(session: Session, s: Table, as_of: date, now: datetime) -> int:
    """Insert the snapshot's invoices we do not know yet; returns how many."""
    i = table_of(Invoice)
    c = table_of(Customer)
    # Straight from the staging table, customer by customer: the customer indexes then grow at
    # their end instead of at random places (3x faster at a million rows on SQLite), and a
    # batch of customers finds its invoices side by side.
    nothing_open = s.c.amount_open == 0
    new = (
        select(s.c.external_id, c.c.id, s.c.number, s.c.issue_date, s.c.due_date, s.c.currency,
               s.c.amount, s.c.amount_open,
               case((nothing_open, InvoiceState.CLOSED.value), else_=InvoiceState.ACTIVE.value),
               case((nothing_open, "settled"), else_=None),
               case((nothing_open, literal(as_of, Date())), else_=None),
               literal(now, UTCDateTime()))
        .select_from(s.join(c, c.c.external_id == s.c.customer_external_id))
        .where(s.c.valid, ~select(i.c.id).where(i.c.external_id == s.c.external_id).exists())
        .order_by(c.c.id, s.c.line)
    )
    adding = insert(i).from_select(
        ["external_id", "customer_id", "number", "issue_date", "due_date", "currency", "amount",
         "amount_open", "state", "state_reason", "closed_on", "updated_at"], new)
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # psycopg reports no row count for this statement built by SQLAlchemy: count what
        # RETURNING gives, inside the server.
        added = adding.returning(i.c.id).cte("added")
        return int(connection.execute(select(func.count()).select_from(added)).scalar_one())
    return int(connection.execute(adding).rowcount)


def _update_invoices(session: Session, updates: list[dict[str, Any]]) -> int:
    """Write the changed invoices' new facts; returns how many."""
    if updates:
        # Core executemany: the SET clause is the columns each parameter set names.
        i = table_of(Invoice)
        session.connection().execute(update(i).where(i.c.id == bindparam("b_id")), updates)
    return len(updates)


def _read_absent_invoices(session: Session, s: Table, shard: Shard | None,
                          changes: _Changes) -> None:
    """Add to `changes.settle` the open invoices (of the shard) no line of the export names."""
    # Rejected rows and other shards' invoices count as present: a bad row must never settle
    # an invoice.
    i = table_of(Invoice)
    for invoice_id, stage, customer_id, amount_open in session.execute(
            select(i.c.id, i.c.stage, i.c.customer_id, i.c.amount_open)
            .where(i.c.state != InvoiceState.CLOSED, *in_shard(i.c.customer_id, shard),
                   ~select(s.c.line).where(s.c.external_id == i.c.external_id).exists())
            .order_by(i.c.id)):
        changes.settle.append((invoice_id, stage, "absent from the snapshot"))
        changes.settled_customers.add(customer_id)
        changes.settled_amount += amount_open


def _guard(session: Session, changes: _Changes, book: Book, empty: bool, as_of: date,
           shard: Shard | None, policy: Policy | None,
           accept: bool) -> tuple[Settled, str | None]:
    """Today's settled figures, and the guard's objection to them; refuse unless `accept`."""
    today = Settled(len(changes.settle), len(changes.settled_customers),
                    changes.settled_amount)
    if policy is None:
        return today, None
    history, gap = settlement_history(session, as_of, shard, policy)
    today = Settled(today.invoices, today.customers, today.amount, gap)
    why = objection(today, book, history, empty, policy)
    if why is not None and not accept:
        raise MassSettlement(
            f"{why}: an export cut short looks just like this. Check the export, and confirm "
            "that these payments are real if they are. Nothing was changed.")
    return today, why


def _record_settled(session: Session, run_id: str | None, today: Settled,
                    confirmed: bool) -> None:
    """Keep the run's settled figures on its row: the guard's history for the next runs."""
    if run_id is not None:
        session.execute(update(Run).where(col(Run.id) == run_id).values(
            settled_invoices=today.invoices, settled_customers=today.customers,
            settled_amount=today.amount, mass_settlement=confirmed))


def _open_book(session: Session, shard: Shard | None) -> Book:
    """The open invoices (of the shard) before reconcile changes anything."""
    invoices, customers, amount = session.execute(
        select(func.count(), func.count(col(Invoice.customer_id).distinct()),
               type_coerce(func.coalesce(func.sum(col(Invoice.amount_open)), 0), Money()))
        .where(col(Invoice.state) != InvoiceState.CLOSED,
               *in_shard(col(Invoice.customer_id), shard))).one()
    return Book(int(invoices), int(customers), amount or Decimal(0))


def settlement_history(session: Session, as_of: date, shard: Shard | None,
                       policy: Policy) -> tuple[list[Settled], int]:
    """What the runs of the last `settlement_guard.history` days with a run (of the same shard)
    settled, newest first, and the business days `as_of` gathers since the last run."""
    # Each day gathers the business days since the run before it (1 without one); a day run
    # twice counts once, by its busiest run; runs from before migration 0008 have no figures.
    days = policy.settlement_guard.history
    country = policy.creditor.country
    shard_of = col(Run.shard)
    scope = shard_of.is_(None) if shard is None else shard_of == str(shard)
    business_date = col(Run.business_date)
    dates = list(session.execute(
        select(business_date).distinct()
        .where(scope, business_date < as_of)
        .order_by(business_date.desc()).limit(days + 1)).scalars())

    def gathered(day: date) -> int:
        earlier = [d for d in dates if d < day]
        return max(1, business_days_between(earlier[0], day, country)) if earlier else 1

    rows = session.execute(
        select(business_date, col(Run.settled_invoices), col(Run.settled_customers),
               col(Run.settled_amount), col(Run.mass_settlement))
        .where(scope, business_date < as_of, business_date >= dates[-1],
               col(Run.settled_customers).is_not(None))
        .order_by(business_date.desc(), col(Run.settled_customers).desc())
    ).all() if dates else []
    history: dict[date, Settled] = {}
    for business_day, invoices, customers, amount, confirmed in rows:
        if invoices is None or customers is None:
            continue  # no figures: a run from before migration 0008 (left out by the query)
        if business_day not in history and len(history) < days:
            history[business_day] = Settled(invoices, customers, amount or Decimal(0),
                                            gathered(business_day), bool(confirmed))
    return list(history.values()), gathered(as_of)


def _reconcile_customers(
    session: Session, rows: list[CustomerRow], result: ReconcileResult, now: datetime
) -> None:
    known: dict[str, Any] = {
        row.external_id: row
        for row in session.execute(
            select(col(Customer.id), col(Customer.external_id),
                   *[col(getattr(Customer, f)) for f in _CUSTOMER_FIELDS])
        )
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row in rows:
        values = _customer_values(row)
        existing = known.get(row.external_id)
        if existing is None:
            inserts.append(values | {"external_id": row.external_id, "updated_at": now})
        elif any(getattr(existing, k) != v for k, v in values.items()):
            updates.append(values | {"id": existing.id, "updated_at": now})
    for batch in chunks(inserts):
        session.execute(insert(Customer), list(batch))
    if updates:
        session.execute(update(Customer), updates)
    result.customers_new = len(inserts)
    result.customers_updated = len(updates)


def _set_state(
    session: Session,
    changes: list[tuple[int, str | None, str]],
    event: TransitionEvent,
    state: InvoiceState,
    as_of: date,
    run_id: str | None,
    now: datetime,
    *,
    reason: str,
) -> None:
    """Move invoices to `state`, one transition each; `changes` are (id, stage, detail)."""
    if not changes:
        return
    values: dict[str, Any] = {"state": state, "updated_at": now, "review_on": None}
    if state == InvoiceState.CLOSED:
        # A paused invoice remembers its pause ("settled:dispute", paused_until kept), so that
        # if it comes back open it is still disputed, held or promised.
        values |= {"closed_on": as_of, "state_reason": case(
            (col(Invoice.state) == InvoiceState.PAUSED,
             "settled:" + func.coalesce(col(Invoice.state_reason), "")),
            else_="settled")}
    elif event == TransitionEvent.REOPENED:
        was_paused = col(Invoice.state_reason).like("settled:%")
        values |= {"closed_on": None,
                   "state": case((was_paused, InvoiceState.PAUSED.value),
                                 else_=InvoiceState.ACTIVE.value),
                   "state_reason": case((was_paused, func.substr(col(Invoice.state_reason), 9)),
                                        else_=None),
                   "paused_until": case((was_paused, col(Invoice.paused_until)), else_=None)}
    else:
        values |= {"state_reason": None, "closed_on": None, "paused_until": None}
    for batch in chunks(changes):
        ids = [invoice_id for invoice_id, _, _ in batch]
        session.execute(update(Invoice).where(col(Invoice.id).in_(ids)).values(**values)
                        .execution_options(synchronize_session=False))
    states: dict[int, InvoiceState] = {}
    if event == TransitionEvent.REOPENED:
        states = {saved_id(invoice_id): now_in for invoice_id, now_in in session.execute(
            select(col(Invoice.id), col(Invoice.state))
            .where(col(Invoice.id).in_([i for i, _, _ in changes])))}
    session.execute(insert(Transition), [
        transition_row(invoice_id, event, from_stage=stage, to_stage=stage,
                       state=states.get(invoice_id, state), on=as_of, at=now, reason=reason,
                       detail=detail, run_id=run_id)
        for invoice_id, stage, detail in changes
    ])


def _settle(
    session: Session,
    changes: list[tuple[int, str | None, str]],
    as_of: date,
    run_id: str | None,
    now: datetime,
) -> int:
    """Close settled invoices and take them out of every undelivered action (settlement wins)."""
    _set_state(session, changes, TransitionEvent.SETTLED, InvoiceState.CLOSED, as_of, run_id,
               now, reason="settled")
    ids = [invoice_id for invoice_id, _, _ in changes]
    return drop_from_undelivered(session, ids, f"settled on {as_of}", now)


def _resume_expired_pauses(session: Session, as_of: date, run_id: str | None, now: datetime,
                           shard: Shard | None = None) -> int:
    """Pauses with an end date resume the day after it; a promise still open then is broken."""
    rows = session.execute(
        select(col(Invoice.id), col(Invoice.stage), col(Invoice.paused_until),
               col(Invoice.state_reason), col(Invoice.amount_open), col(Invoice.currency))
        .where(col(Invoice.state) == InvoiceState.PAUSED, col(Invoice.paused_until).is_not(None),
               col(Invoice.paused_until) < as_of, *in_shard(col(Invoice.customer_id), shard))
    ).all()
    by_event: dict[tuple[TransitionEvent, str], list[tuple[int, str | None, str]]] = \
        defaultdict(list)
    for invoice_id, stage, until, kind, amount_open, currency in rows:
        still = f"{amount_open} {currency} still open"
        if kind == "promise":
            key = (TransitionEvent.PROMISE_BROKEN, "promise to pay broken")
            detail = f"promised by {until} (grace included); {still}"
        elif kind == "paid_claimed":
            key = (TransitionEvent.RESUMED, "claimed payment not received")
            detail = f"payment expected by {until}; {still}"
        else:
            key = (TransitionEvent.RESUMED, "pause ended")
            detail = f"{kind or 'pause'} ended on {until}"
        by_event[key].append((saved_id(invoice_id), stage, detail))
    for (event, reason), changes in by_event.items():
        _set_state(session, changes, event, InvoiceState.ACTIVE, as_of, run_id, now,
                   reason=reason)
    return len(rows)

