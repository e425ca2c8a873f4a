"""Pauses: a dispute, a customer on hold, a promise to pay, a payment said to be on its way.
A paused invoice is never dunned, and is taken out of every message not yet delivered."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.coltypes import utcnow
from dunning.errors import ConflictError, NotFoundError
from dunning.ledger import drop_from_undelivered, transition_row
from dunning.models import Customer, Invoice, Transition
from dunning.statuses import InvoiceState, TransitionEvent


def invoice_by_ref(session: Session, external_id: str) -> Invoice:
    invoice = session.execute(
        select(Invoice).where(col(Invoice.external_id) == external_id).with_for_update()
    ).scalar_one_or_none()
    if invoice is None:
        raise NotFoundError(f"no invoice {external_id!r} in the ledger")
    return invoice


def pause(
    session: Session, invoices: Sequence[Invoice], kind: str, until: date | None, *,
    by: str, reason: str, on: date, action_id: int | None = None,
) -> int:
    """Pause open invoices (`until` None: until a person ends it); returns how many."""
    now = utcnow()
    chosen = [(_key(i), i) for i in invoices if i.state != InvoiceState.CLOSED]
    if not chosen:
        return 0
    ids = [invoice_id for invoice_id, _ in chosen]
    session.execute(update(Invoice).where(col(Invoice.id).in_(ids)).values(
        state=InvoiceState.PAUSED, state_reason=kind, paused_until=until, updated_at=now,
        review_on=None))
    detail = f"until {until}" if until else "until resolved"
    session.execute(insert(Transition), [
        transition_row(invoice_id, TransitionEvent.PAUSED, from_stage=i.stage,
                       to_stage=i.stage, state=InvoiceState.PAUSED, on=on, at=now,
                       reason=reason, detail=detail, actor=by, action_id=action_id)
        for invoice_id, i in chosen
    ])
    drop_from_undelivered(session, ids, f"paused ({kind}) on {on}", now)
    return len(chosen)


def _key(invoice: Invoice) -> int:
    """An invoice's id: every invoice paused was read from the ledger, so it has one."""
    if invoice.id is None:
        raise ValueError(f"invoice {invoice.external_id} is not in the ledger yet")
    return invoice.id


def dispute(session: Session, external_id: str, *, by: str, reason: str, on: date) -> Invoice:
    """The customer disputes this invoice: no dunning until `resolve`."""
    invoice = invoice_by_ref(session, external_id)
    if invoice.state == InvoiceState.CLOSED:
        raise ConflictError(f"invoice {external_id} is closed ({invoice.state_reason}); "
                            "nothing to dispute")
    pause(session, [invoice], "dispute", None, by=by, reason=f"disputed: {reason}", on=on)
    session.refresh(invoice)
    return invoice


def resolve(session: Session, external_id: str, *, by: str, credit_note: bool, on: date) -> \
        Invoice:
    """End a dispute (or a write-off review after the agency gave up). With a credit note
    coming, the invoice stays out of dunning until the snapshot shows it settled; otherwise
    escalation resumes where it stood."""
    invoice = invoice_by_ref(session, external_id)
    if invoice.state != InvoiceState.PAUSED or \
            invoice.state_reason not in ("dispute", "write_off_review"):
        raise ConflictError(f"invoice {external_id} is not in dispute nor up for write-off "
                            f"review (state {invoice.state}); nothing changed")
    now = utcnow()
    what = "dispute" if invoice.state_reason == "dispute" else "write-off review"
    values: dict[str, Any] = {"review_on": None}  # evaluated at the next run
    event: TransitionEvent
    state: InvoiceState
    if credit_note:
        values |= {"state_reason": "credit_note"}
        event, state, reason = TransitionEvent.RESOLVED, InvoiceState.PAUSED, \
            f"{what} resolved by {by}: a credit note will settle it"
    else:
        values |= {"state": InvoiceState.ACTIVE, "state_reason": None, "paused_until": None}
        event, state, reason = TransitionEvent.RESUMED, InvoiceState.ACTIVE, \
            f"{what} resolved by {by}"
    invoice_id = _key(invoice)
    session.execute(update(Invoice).where(col(Invoice.id) == invoice_id)
                    .values(updated_at=now, **values))
    session.execute(insert(Transition), [transition_row(
        invoice_id, event, from_stage=invoice.stage,
        to_stage=invoice.stage, state=state, on=on, at=now, reason=reason, actor=by)])
    session.flush()
    session.refresh(invoice)
    return invoice


def hold(session: Session, customer_ref: str, *, until: date, by: str, reason: str,
         on: date) -> int:
    """Pause every invoice of a customer through `until`, invoices arriving meanwhile too."""
    customer = session.execute(
        select(Customer).where(col(Customer.external_id) == customer_ref).with_for_update()
    ).scalar_one_or_none()
    if customer is None:
        raise NotFoundError(f"no customer {customer_ref!r} in the ledger")
    if until < on:
        raise ConflictError(f"the hold's last day {until} is before the business date {on}")
    customer.hold_until = until
    customer.hold_reason = f"{reason} (by {by})"
    # Its invoices' review dates counted with the old hold (those arriving meanwhile stay
    # active, held by the customer's date alone).
    session.execute(update(Invoice).where(col(Invoice.customer_id) == customer.id)
                    .values(review_on=None).execution_options(synchronize_session=False))
    invoices = session.execute(
        select(Invoice).where(col(Invoice.customer_id) == customer.id,
                              col(Invoice.state) == InvoiceState.ACTIVE)
    ).scalars().all()
    return pause(session, invoices, "hold", until, by=by, reason=f"customer on hold: {reason}",
                 on=on)
