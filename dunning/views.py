"""What the command line shows: invoices with their stage, an invoice's history, actions."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.db import saved_id
from dunning.errors import NotFoundError
from dunning.ladder import InvoiceFacts, decide
from dunning.ledger.delivery import Delivery, stage_deliveries, with_stage_actions
from dunning.ledger.evaluate import UNBLOCKED, blocked_stages
from dunning.ledger.voice import paced_by_customer
from dunning.models import Action, ActionInvoice, Customer, Invoice, LetterPosting, Transition
from dunning.policy import Policy
from dunning.posting import POSTABLE
from dunning.statuses import UNDELIVERED, InvoiceState


def _money(value: Any) -> str | None:
    return None if value is None else f"{value:.2f}"


def invoice_status(session: Session, as_of: date, customer: str | None = None,
                   policy: Policy | None = None) -> list[dict[str, Any]]:
    """Every known invoice with its stage, state and undelivered action (if any); with the
    policy, `waiting`: why an active invoice does not move on `as_of` (the ladder's reason, or
    the customer's: the contact cadence, an open formal notice)."""
    query = (
        select(Invoice, col(Customer.external_id))
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .order_by(col(Customer.external_id), col(Invoice.due_date), col(Invoice.external_id))
    )
    if customer is not None:
        found = session.execute(
            select(col(Customer.id)).where(col(Customer.external_id) == customer)).scalar()
        if found is None:
            raise NotFoundError(f"no customer {customer!r} in the ledger")
        query = query.where(col(Invoice.customer_id) == found)
    pending: dict[int, int] = {}
    for invoice_id, action_id in session.execute(
        select(col(ActionInvoice.invoice_id), col(ActionInvoice.action_id))
        .join(Action, col(Action.id) == ActionInvoice.action_id)
        .where(col(Action.status).in_(UNDELIVERED), col(ActionInvoice.dropped_reason).is_(None))
        .order_by(col(ActionInvoice.action_id))
    ):
        pending[invoice_id] = action_id
    rows = session.execute(query).all()
    why = _waiting(session, [invoice for invoice, _ in rows], as_of, policy) if policy else {}
    return [
        {
            "invoice_id": invoice.external_id,
            "customer_id": customer_ref,
            "number": invoice.number,
            "stage": invoice.stage,
            "state": invoice.state,
            "state_reason": invoice.state_reason,
            "due_date": invoice.due_date.isoformat(),
            "currency": invoice.currency,
            "amount": _money(invoice.amount),
            "amount_open": _money(invoice.amount_open),
            "days_overdue": (as_of - invoice.due_date).days,
            "pending_action": None if invoice.id is None else pending.get(invoice.id),
            "waiting": why.get(invoice.id) if invoice.id is not None else None,
        }
        for invoice, customer_ref in rows
    ]


def _waiting(session: Session, invoices: list[Invoice], as_of: date,
             policy: Policy) -> dict[int, str]:
    """Why each active invoice does not move on `as_of`, as the run would say it."""
    active = [i for i in invoices if i.state == InvoiceState.ACTIVE and i.id is not None]
    # Read for the whole ledger, not id by id: a status lists every invoice, more than a
    # statement takes parameters.
    holds = dict(session.execute(
        select(col(Customer.id), col(Customer.hold_until))
        .where(col(Customer.hold_until).is_not(None))).all())
    blocked = blocked_stages(session, select(col(Invoice.id))
                             .where(col(Invoice.state) == InvoiceState.ACTIVE))
    delivery = stage_deliveries(session, with_stage_actions(
        (saved_id(i.id), i.stage_action_id) for i in active))
    facts = []
    for i in active:
        stages, waiting = blocked.get(saved_id(i.id), UNBLOCKED)
        reached = delivery.get(saved_id(i.id), Delivery())
        facts.append(InvoiceFacts(
            invoice_id=saved_id(i.id), customer_id=i.customer_id, due_date=i.due_date,
            amount=i.amount, amount_open=i.amount_open, stage=i.stage,
            stage_entered_on=i.stage_entered_on, state=i.state, rejected_stages=stages,
            pending_stage=waiting, hold_until=holds.get(i.customer_id), currency=i.currency,
            delivered_on=reached.delivered_on, held=reached.held))
    decided = [(f, decide(f, policy, as_of)) for f in facts]
    return {invoice.invoice_id: f"due: {decision.stage}" if decision.stage else decision.reason
            for _, members in paced_by_customer(session, decided, policy, as_of)
            for invoice, decision in members}


def invoice_history(session: Session, external_id: str) -> list[dict[str, Any]]:
    invoice_id = session.execute(
        select(col(Invoice.id)).where(col(Invoice.external_id) == external_id)).scalar()
    if invoice_id is None:
        raise NotFoundError(f"no invoice {external_id!r} in the ledger")
    return [
        {
            "at": t.at.isoformat(),
            "business_date": t.business_date.isoformat(),
            "event": t.event,
            "from_stage": t.from_stage,
            "to_stage": t.to_stage,
            "state": t.state,
            "reason": t.reason,
            "detail": t.detail,
            "actor": t.actor,
            "run_id": t.run_id,
            "action_id": t.action_id,
        }
        for t in session.execute(
            select(Transition).where(col(Transition.invoice_id) == invoice_id)
            .order_by(col(Transition.at), col(Transition.id))
        ).scalars()
    ]


def action_list(session: Session, status: str | None = None) -> list[dict[str, Any]]:
    query = (select(Action, col(Customer.external_id))
             .join(Customer, col(Customer.id) == Action.customer_id).order_by(col(Action.id)))
    if status is not None:
        query = query.where(col(Action.status) == status)
    # Read rows always have their ids (the check only narrows `int | None`).
    rows = [(action.id, action, customer_ref) for action, customer_ref in session.execute(query)
            if action.id is not None]
    invoices: dict[int, list[str]] = defaultdict(list)
    dropped: dict[int, list[str]] = defaultdict(list)
    totals: dict[int, dict[str, Any]] = defaultdict(dict)
    ids = [action_id for action_id, _, _ in rows]
    for start in range(0, len(ids), 2000):
        for action_id, external_id, reason, amount, currency in session.execute(
            select(col(ActionInvoice.action_id), col(Invoice.external_id),
                   col(ActionInvoice.dropped_reason), col(ActionInvoice.amount_open),
                   col(Invoice.currency))
            .join(Invoice, col(Invoice.id) == ActionInvoice.invoice_id)
            .where(col(ActionInvoice.action_id).in_(ids[start:start + 2000]))
            .order_by(col(Invoice.external_id))
        ):
            if reason is None:
                invoices[action_id].append(external_id)
                totals[action_id][currency] = totals[action_id].get(currency, 0) + amount
            else:
                dropped[action_id].append(external_id)
    posted: dict[int, LetterPosting] = {}
    letters = [action_id for action_id, action, _ in rows if action.kind == "letter"]
    for start in range(0, len(letters), 2000):
        for posting in session.execute(select(LetterPosting).where(
                col(LetterPosting.action_id).in_(letters[start:start + 2000]))).scalars():
            posted[posting.action_id] = posting
    return [
        {
            "action_id": action_id,
            "kind": action.kind,
            "stage": action.stage,
            "customer_id": customer_ref,
            "invoice_ids": invoices[action_id],
            "dropped_invoice_ids": dropped[action_id],
            "total_open": {cur: _money(v) for cur, v in totals[action_id].items()},
            "status": action.status,
            "created_at": action.created_at.isoformat(),
            "business_date": action.business_date.isoformat(),
            "attempts": action.attempts,
            "provider_id": action.provider_id,
            "document": action.document,
            "last_error": action.last_error,
            # A letter produced and kept (its email copy sent, or bounced) is to post until a
            # person records its posting (a formal notice: with its registered-mail number).
            "to_post": action.kind == "letter" and action.status in POSTABLE
            and bool(action.document) and action_id not in posted,
            "template": action.template,
            "tracking": posted[action_id].tracking if action_id in posted else None,
            "posted_on": posted[action_id].posted_on.isoformat() if action_id in posted
            else None,
        }
        for action_id, action, customer_ref in rows
    ]
