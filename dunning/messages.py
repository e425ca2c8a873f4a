"""What each claimed action's message says: the customer, the invoices it lists (with the
section of an email each falls in), and, for a formal notice, the reminders sent before about
those invoices. Read by the dispatcher, or by its worker processes (dunning/dispatch_pool.py)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import Engine, select
from sqlalchemy.orm import aliased
from sqlmodel import col

from dunning.channels.message import Line, Message
from dunning.channels.protocol import Claimed
from dunning.db import transaction
from dunning.models import Action, ActionInvoice, BadAddress, Customer, Invoice, Transition
from dunning.policy import Policy
from dunning.statuses import ActionStatus, TransitionEvent


def section(days_overdue: int, from_stage: str | None, policy: Policy) -> str:
    """Where an email lists an invoice: due soon (not yet due), now overdue (its first overdue
    reminder: before it, at most a pre-due one), already reminded."""
    if days_overdue < 0:
        return "due_soon"
    before = policy.stage_index(from_stage)  # -1: none (or no longer in the policy)
    if before < 0 or policy.stages[before].days_after_due < 0:
        return "now_overdue"
    return "already_reminded"


def read_messages(
    engine: Engine, ids: list[int], as_of: date, policy: Policy,
) -> dict[int, tuple[Claimed, Message | None]]:
    """The claimed actions with what their messages say (None: no invoice left to mention).

    Plain rows, not ORM entities: a first run reads a hundred thousand of them, and building
    entities cost more than rendering the messages."""
    out: dict[int, tuple[Claimed, Message | None]] = {}
    with transaction(engine) as session:
        rows = session.execute(
            select(col(Action.id), col(Action.customer_id), col(Action.dedupe_key),
                   col(Action.kind), col(Action.stage), col(Action.template),
                   col(Customer.external_id), col(Customer.name), col(Customer.language),
                   col(Customer.country), col(Customer.email), col(Customer.address),
                   col(Customer.legal_id), col(Customer.phone))
            .join(Customer, col(Customer.id) == Action.customer_id)
            .where(col(Action.id).in_(ids))
        ).all()
        emails = {row.id for row in rows if row.kind == "email"}
        # The stage each invoice left when its message was decided (its transition with this
        # action), for the email's sections: found through transition's invoice_id index.
        came_from = (select(col(Transition.from_stage))
                     .where(col(Transition.invoice_id) == ActionInvoice.invoice_id,
                            col(Transition.action_id) == ActionInvoice.action_id,
                            col(Transition.event) == TransitionEvent.STAGE)
                     .order_by(col(Transition.id)).limit(1).scalar_subquery())
        lines: dict[int, list[Line]] = defaultdict(list)
        for (action_id, number, external_id, issue_date, due_date, currency, amount,
             amount_open, from_stage) in session.execute(
            select(col(ActionInvoice.action_id), col(Invoice.number), col(Invoice.external_id),
                   col(Invoice.issue_date), col(Invoice.due_date), col(Invoice.currency),
                   col(Invoice.amount), col(Invoice.amount_open), came_from)
            .join(Invoice, col(Invoice.id) == ActionInvoice.invoice_id)
            .where(col(ActionInvoice.action_id).in_(ids),
                   col(ActionInvoice.dropped_reason).is_(None))
            .order_by(col(ActionInvoice.action_id), col(Invoice.due_date), col(Invoice.id))
        ):
            days_overdue = (as_of - due_date).days
            lines[action_id].append(Line(
                number=number or external_id, issue_date=issue_date, due_date=due_date,
                currency=currency, amount=amount, amount_open=amount_open,
                days_overdue=days_overdue, invoice_ref=external_id,
                section=section(days_overdue, from_stage, policy)
                if action_id in emails else "",
            ))
    reminders: dict[int, list[tuple[date, str]]] = defaultdict(list)
    others = sorted({row.id for row in rows} - emails)
    if others:
        # What was sent before about the invoices of this action (a formal notice recalls the
        # reminders of the invoices it is about, not every message the customer received).
        mine, theirs = aliased(ActionInvoice), aliased(ActionInvoice)
        with transaction(engine) as session:
            for action_id, _, when, stage in session.execute(
                select(col(mine.action_id), col(Action.id), col(Action.business_date),
                       col(Action.stage))
                .join(theirs, col(theirs.invoice_id) == col(mine.invoice_id))
                .join(Action, col(Action.id) == col(theirs.action_id))
                .where(col(mine.action_id).in_(others), col(mine.dropped_reason).is_(None),
                       col(Action.status) == ActionStatus.SENT,
                       col(Action.kind).in_(("email", "phone")))
                .distinct()
                .order_by(col(mine.action_id), col(Action.business_date), col(Action.id))
            ):
                reminders[action_id].append((when, stage))
    # The addresses a provider reported bad (dunning/delivery_events.py): not attempted again.
    given = {row.id: tuple(a.strip() for a in (row.email or "").split(";") if a.strip())
             for row in rows}
    addresses = {a.lower() for each in given.values() for a in each}
    bad: set[str] = set()
    if addresses:
        with transaction(engine) as session:
            bad = set(session.execute(select(col(BadAddress.address)).where(
                col(BadAddress.address).in_(sorted(addresses)))).scalars())
    for (action_id, customer_id, dedupe_key, kind, stage, template, customer_ref, name,
         language, country, _email, address, legal_id, phone) in rows:
        action = Claimed(action_id, customer_id, dedupe_key, kind, stage)
        if not lines[action_id]:
            out[action_id] = (action, None)
            continue
        recipients = tuple(a for a in given[action_id] if a.lower() not in bad)
        out[action_id] = (action, Message(
            customer_ref=customer_ref, customer_name=name, language=language, country=country,
            recipients=recipients, stage=stage, template=template or stage, as_of=as_of,
            lines=tuple(lines[action_id]), customer_address=address, customer_legal_id=legal_id,
            reminders=tuple(reminders[action_id]), customer_phone=phone,
            bounced=tuple(a for a in given[action_id] if a.lower() in bad),
        ))
    return out
