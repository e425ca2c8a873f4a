"""Call tasks: what the phone stage puts on a collector's list, and what the call taught us."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.errors import CallOutcomeError, ConflictError, NotFoundError, OutcomePart
from dunning.models import (
    Action,
    ActionInvoice,
    CallOutcome,
    Customer,
    Invoice,
    Transition,
    utcnow,
)
from dunning.pauses import pause
from dunning.policy import Policy
from dunning.statuses import READY, UNDELIVERED, ActionStatus, TransitionEvent

OPEN = READY  # a call task still to make: queued, or approved
OUTCOMES = ("promise", "dispute", "no-answer", "wrong-contact", "paid-claimed", "callback",
            "reached")


def _invoices(session: Session, action_ids: list[int]) -> dict[int, list[Invoice]]:
    out: dict[int, list[Invoice]] = defaultdict(list)
    for action_id, invoice in session.execute(
        select(col(ActionInvoice.action_id), Invoice)
        .join(Invoice, col(Invoice.id) == ActionInvoice.invoice_id)
        .where(col(ActionInvoice.action_id).in_(action_ids),
               col(ActionInvoice.dropped_reason).is_(None))
        .order_by(col(Invoice.due_date), col(Invoice.id))
    ):
        out[action_id].append(invoice)
    return out


def open_tasks(session: Session, as_of: date, assignee: str | None = None) -> \
        list[dict[str, Any]]:
    """Open call tasks: those past their due date first (the latest first), then the most
    overdue money (open amount weighted by days overdue)."""
    query = (select(Action, Customer).join(Customer, col(Customer.id) == Action.customer_id)
             .where(col(Action.kind) == "phone", col(Action.status).in_(OPEN)))
    if assignee is not None:
        query = query.where(col(Action.assignee) == assignee)
    rows = [(_key(action.id), action, _key(customer.id), customer)
            for action, customer in session.execute(query)]
    invoices = _invoices(session, [action_id for action_id, _, _, _ in rows])
    history = _history(session, [customer_id for _, _, customer_id, _ in rows])
    tasks: list[dict[str, Any]] = []
    for action_id, action, customer_id, customer in rows:
        lines = invoices[action_id]
        if not lines:
            continue
        totals: dict[str, Decimal] = defaultdict(Decimal)
        weight = Decimal(0)
        for invoice in lines:
            totals[invoice.currency] += invoice.amount_open
            weight += invoice.amount_open * max((as_of - invoice.due_date).days, 0)
        days_late = max((as_of - action.due_on).days, 0) if action.due_on else 0
        tasks.append({
            "task_id": action.id,
            "customer_id": customer.external_id,
            "customer_name": customer.name,
            "phone": customer.phone,
            "email": customer.email,
            "invoice_ids": [i.external_id for i in lines],
            "invoices": [{"invoice_id": i.external_id, "number": i.number,
                          "due_date": i.due_date.isoformat(),
                          "days_overdue": (as_of - i.due_date).days,
                          "amount_open": f"{i.amount_open:.2f}", "currency": i.currency}
                         for i in lines],
            "total_open": " + ".join(f"{v:.2f} {k}" for k, v in sorted(totals.items())),
            "assignee": action.assignee,
            "due_on": action.due_on.isoformat() if action.due_on else None,
            "overdue": days_late > 0,
            "days_late": days_late,
            "attempts": action.attempts,
            "history": history.get(customer_id, []),
            "_weight": weight,
        })
    tasks.sort(key=lambda t: (-t["days_late"], -t["_weight"], t["task_id"]))
    for task in tasks:
        del task["_weight"]
    return tasks


def _key(row_id: int | None) -> int:
    """The primary key of a row read from the database (only a row not yet flushed has none)."""
    if row_id is None:
        raise ValueError("a row read from the database has no id")
    return row_id


def _history(session: Session, customer_ids: list[int]) -> dict[int, list[str]]:
    """What the customer already heard from us, and what they said: one line each."""
    out: dict[int, list[str]] = defaultdict(list)
    if not customer_ids:
        return out
    for customer_id, business_date, kind, stage, status in session.execute(
        select(col(Action.customer_id), col(Action.business_date), col(Action.kind),
               col(Action.stage), col(Action.status))
        .where(col(Action.customer_id).in_(customer_ids),
               col(Action.status).in_((ActionStatus.SENT, ActionStatus.FAILED)))
        .order_by(col(Action.business_date), col(Action.id))
    ):
        out[customer_id].append(f"{business_date} {stage} ({kind}, {status})")
    for customer_id, business_date, outcome, by, note in session.execute(
        select(col(Action.customer_id), col(CallOutcome.business_date),
               col(CallOutcome.outcome), col(CallOutcome.by), col(CallOutcome.note))
        .join(Action, col(Action.id) == CallOutcome.action_id)
        .where(col(Action.customer_id).in_(customer_ids))
        .order_by(col(CallOutcome.at))
    ):
        out[customer_id].append(f"{business_date} call: {outcome} ({by})"
                                + (f": {note}" if note else ""))
    for customer_id, business_date, event, reason in session.execute(
        select(col(Invoice.customer_id), col(Transition.business_date), col(Transition.event),
               col(Transition.reason))
        .join(Invoice, col(Invoice.id) == Transition.invoice_id)
        .where(col(Invoice.customer_id).in_(customer_ids),
               col(Transition.event).in_((TransitionEvent.PAUSED, TransitionEvent.PROMISE_BROKEN,
                                          TransitionEvent.RESOLVED)))
        .order_by(col(Transition.at))
    ):
        out[customer_id].append(f"{business_date} {event}: {reason}")
    return out


def _refusal(outcome: str, until: date | None, reason: str | None, on: date) -> \
        tuple[str, OutcomePart] | None:
    """What an outcome lacks, or a date of it already past, before anything is read (None:
    nothing)."""
    if outcome not in OUTCOMES:
        return f"the outcome {outcome!r} is not one of {', '.join(OUTCOMES)}", "outcome"
    if outcome == "promise" and until is None:
        return "a promise needs the date the customer will pay by", "promise_date"
    if outcome == "callback" and until is None:
        return "a callback needs the date to call again", "callback_date"
    if outcome == "dispute" and not reason:
        return "a dispute needs the reason the customer gives", "reason"
    if outcome == "promise" and until is not None and until < on:
        return (f"the promised date {until} is before the business date {on}",
                "early_promise_date")
    if outcome == "callback" and until is not None and until < on:
        return (f"the callback date {until} is before the business date {on}",
                "early_callback_date")
    return None


def _amount_refusal(task_id: int, amount: Decimal, invoices: list[Invoice]) -> str | None:
    """Why a promised amount cannot stand against the invoices it is about (None: it can)."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in invoices:
        totals[invoice.currency] += invoice.amount_open
    if len(totals) > 1:
        # One figure cannot say how it splits between currencies, nor be compared to a total.
        return (f"the invoices of call task {task_id} are in several currencies "
                f"({', '.join(sorted(totals))}): record the amount for the invoices of one "
                "currency at a time, or the promise without an amount")
    ((currency, total),) = totals.items()
    if amount > total:
        return (f"the promised amount {amount} is above the {total:.2f} {currency} open on "
                f"call task {task_id}'s invoices")
    return None


def record_outcome(
    session: Session, policy: Policy, task_id: int, *, by: str, outcome: str, on: date,
    until: date | None = None, amount: Decimal | None = None, reason: str | None = None,
    invoice_refs: list[str] | None = None,
) -> dict[str, Any]:
    """Record a call's outcome and what it changes on the ladder. `until` is the date a promise
    pays by, or the date to call back."""
    refused = _refusal(outcome, until, reason, on)
    if refused is not None:
        message, part = refused
        raise CallOutcomeError(f"{message}; nothing was recorded.", outcome=outcome, part=part)
    task = session.execute(
        select(Action).where(col(Action.id) == task_id, col(Action.kind) == "phone")
        .with_for_update()
    ).scalar_one_or_none()
    if task is None:
        raise NotFoundError(f"no call task {task_id}.", "call task")
    if task.status not in OPEN:
        raise ConflictError(f"call task {task_id} is {task.status}, not open; nothing changed")
    invoices = _invoices(session, [task_id])[task_id]
    if invoice_refs:
        unknown = set(invoice_refs) - {i.external_id for i in invoices}
        if unknown:
            raise CallOutcomeError(
                f"{'invoice' if len(unknown) == 1 else 'invoices'} "
                f"{', '.join(sorted(unknown))} not in call task {task_id}; nothing was "
                "recorded.",
                outcome=outcome, part="invoices")
        invoices = [i for i in invoices if i.external_id in invoice_refs]
    if amount is not None and invoices:
        too_much = _amount_refusal(task_id, amount, invoices)
        if too_much is not None:
            raise CallOutcomeError(f"{too_much}; nothing was recorded.", outcome=outcome,
                                   part="amount")

    now = utcnow()
    session.add(CallOutcome(action_id=task_id, outcome=outcome, by=by, at=now, business_date=on,
                            until=until, amount=amount, note=reason))
    task.updated_at = now
    task.attempted_on = on  # the business date of the last call: the stage's delivery date
    paused = 0
    if outcome == "no-answer":
        task.attempts += 1
        if task.attempts >= policy.phone.max_attempts:
            task.status, task.retryable = ActionStatus.FAILED, False
            task.last_error = f"no answer after {task.attempts} calls; escalation goes on"
        else:
            task.due_on = on + timedelta(days=1)
    elif outcome == "callback":
        task.due_on = until
    elif outcome == "wrong-contact":
        task.status, task.retryable = ActionStatus.FAILED, False
        task.last_error = f"wrong contact (reported by {by}): fix the customer's phone number"
    else:
        task.status, task.sent_at = ActionStatus.SENT, now
        session.flush()  # the task is delivered before its invoices leave undelivered actions
        if outcome == "promise":
            assert until is not None
            end = until + timedelta(days=policy.pauses.promise_grace_days)
            said = f"promise to pay by {until}" + (f" ({amount})" if amount else "")
            paused = pause(session, invoices, "promise", end, by=by, reason=said, on=on,
                           action_id=task_id)
        elif outcome == "dispute":
            paused = pause(session, invoices, "dispute", None, by=by,
                           reason=f"disputed on the phone: {reason}", on=on, action_id=task_id)
        elif outcome == "paid-claimed":
            end = on + timedelta(days=policy.pauses.payment_in_transit_days)
            paused = pause(session, invoices, "paid_claimed", end, by=by,
                           reason="customer says the payment is on its way", on=on,
                           action_id=task_id)
    session.flush()
    return {"task_id": task_id, "outcome": outcome, "status": task.status,
            "due_on": task.due_on.isoformat() if task.due_on else None,
            "attempts": task.attempts, "invoices_paused": paused}


__all__ = ["OUTCOMES", "UNDELIVERED", "open_tasks", "record_outcome"]
