"""SendGrid's delivery events, applied to the ledger (the endpoint that receives them is
dunning/events_api.py).

Each event names its action by the dedupe key the message carried in `custom_args`. Every event
is recorded (table `delivery_event`) once: SendGrid sends an event again when it is not sure it
was received, and its `sg_event_id` tells. What an action's events say does not depend on their
order: `delivered` to any recipient settles it as `sent`; else a `bounce`, `dropped` or
`spamreport` makes it `bounced` or `dropped`, flags the address (no later message is attempted
to it) and starts its stage's fallback (`on_bounce: letter`: a reminder letter by post;
`phone`: a call task; each with a transition that says why); else `processed` (SendGrid took
it) settles an `unknown` one as `sent`. `deferred` and the engagement events are recorded only.
An action still `sending` (its dispatcher has not recorded it yet) is settled by the next run
(`settle_reported`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.channels.letter import REMINDER_LETTER
from dunning.channels.sendgrid import CUSTOM_ARG
from dunning.coltypes import utcnow
from dunning.db import chunks, saved_id
from dunning.models import (
    Action,
    ActionInvoice,
    BadAddress,
    Customer,
    DeliveryEvent,
    Invoice,
    Transition,
)
from dunning.policy import Policy
from dunning.statuses import READY, ActionStatus, TransitionEvent

FAILING = {"bounce": ActionStatus.BOUNCED, "spamreport": ActionStatus.BOUNCED,
           "dropped": ActionStatus.DROPPED}
# Statuses the events may move an action between (never one being claimed, or a call task)
SETTLEABLE = (ActionStatus.UNKNOWN, ActionStatus.SENT, ActionStatus.BOUNCED,
              ActionStatus.DROPPED)
MAX_EVENTS = 5000  # a batch SendGrid posts holds at most about a thousand
DETAIL_LENGTH = 500


@dataclass
class Received:
    recorded: int = 0
    duplicates: int = 0
    unmatched: int = 0  # no action carries its key (another system's mail, or a key lost)
    changed: dict[int, str] = field(default_factory=dict)  # action -> its new status
    fallbacks: list[int] = field(default_factory=list)  # letters or call tasks, created or extended

    def as_dict(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "duplicates": self.duplicates,
                "unmatched": self.unmatched, "changed": self.changed,
                "fallbacks": self.fallbacks}


def receive(session: Session, policy: Policy, events: list[Any], today: date) -> Received:
    """Record a batch of SendGrid events and apply them (see the module's docstring)."""
    result = Received()
    items = [item for item in events[:MAX_EVENTS]
             if isinstance(item, dict) and isinstance(item.get("event"), str)]
    # The events already recorded and the actions named, read once for the whole batch
    seen: set[str] = set()
    keys: dict[str, int] = {}
    ids = sorted({i for item in items if (i := _text(item.get("sg_event_id"), 100))})
    names = sorted({k for item in items if (k := _text(item.get(CUSTOM_ARG), 200))})
    for part in chunks(ids):
        seen.update(known for known in session.execute(
            select(col(DeliveryEvent.provider_event_id)).where(
                col(DeliveryEvent.provider_event_id).in_(part))).scalars() if known)
    for part in chunks(names):
        keys.update((key, saved_id(action_id)) for key, action_id in session.execute(
            select(col(Action.dedupe_key), col(Action.id)).where(
                col(Action.dedupe_key).in_(part))))
    touched: set[int] = set()
    for item in items:
        event_id = _text(item.get("sg_event_id"), 100)
        if event_id and event_id in seen:
            result.duplicates += 1
            continue
        if event_id:
            seen.add(event_id)
        key = _text(item.get(CUSTOM_ARG), 200)
        action_id = keys.get(key) if key else None
        if action_id is None:
            result.unmatched += 1
        name = item["event"][:32]
        session.add(DeliveryEvent(
            action_id=action_id, event=name, source="sendgrid", provider_event_id=event_id,
            detail=_detail(item), occurred_at=_when(item.get("timestamp"))))
        result.recorded += 1
        address = _text(item.get("email"), 320)
        if name in FAILING and address:
            _flag(session, address.lower(), name, _text(item.get("reason"), DETAIL_LENGTH),
                  action_id)
        if action_id is not None:
            touched.add(saved_id(action_id))
    session.flush()
    for action_id in sorted(touched):
        _apply(session, policy, action_id, today, result)
    return result


def settle_reported(session: Session, policy: Policy, today: date) -> Received:
    """Apply the events received while their action was still `sending` (each run does)."""
    result = Received()
    for action_id in session.execute(
        select(col(Action.id)).distinct()
        .join(DeliveryEvent, col(DeliveryEvent.action_id) == col(Action.id))
        .where(col(DeliveryEvent.source) == "sendgrid",
               col(Action.status).in_((ActionStatus.SENT, ActionStatus.UNKNOWN)),
               col(DeliveryEvent.event).in_(("delivered", "processed", *FAILING)))
    ).scalars():
        _apply(session, policy, saved_id(action_id), today, result)
    return result


def _apply(session: Session, policy: Policy, action_id: int, today: date,
           result: Received) -> None:
    action = session.get(Action, action_id, with_for_update=True)
    if action is None or action.status not in SETTLEABLE or action.kind not in ("email",
                                                                                 "letter"):
        return
    names = set(session.execute(select(col(DeliveryEvent.event)).where(
        col(DeliveryEvent.action_id) == action_id,
        col(DeliveryEvent.source) == "sendgrid")).scalars())
    if "delivered" in names:
        target = ActionStatus.SENT
    elif failing := [FAILING[name] for name in ("bounce", "spamreport", "dropped")
                     if name in names]:
        target = failing[0]
    elif "processed" in names:
        target = ActionStatus.SENT
    else:
        return
    if target == action.status:
        return
    now = utcnow()
    action.status, action.updated_at = target, now
    if target == ActionStatus.SENT:
        action.sent_at = action.sent_at or now
        action.last_error = None
    else:
        action.last_error = f"SendGrid reported it {target} (an address is flagged bad)"
    result.changed[action_id] = str(target)
    if target in (ActionStatus.BOUNCED, ActionStatus.DROPPED) and action.kind == "email":
        task = _fallback(session, policy, action, today, now)
        if task is not None:
            result.fallbacks.append(task)


def _fallback(session: Session, policy: Policy, action: Action, today: date,
              now: datetime) -> int | None:
    """The stage's `on_bounce`: a reminder letter by post, or a call task (the customer's open
    task, extended, if it has one), about the bounced email's invoices, each invoice's
    transition saying why; the invoices held by the email wait on it instead."""
    try:
        rung = policy.stage(action.stage)
    except KeyError:
        return None
    if rung.on_bounce == "none":
        return None
    action_id = saved_id(action.id)
    invoices = list(session.execute(
        select(col(ActionInvoice.invoice_id), col(ActionInvoice.amount_open),
               col(ActionInvoice.days_overdue))
        .where(col(ActionInvoice.action_id) == action_id,
               col(ActionInvoice.dropped_reason).is_(None))).all())
    if not invoices:
        return None
    if rung.on_bounce == "letter":
        task: Action | None = Action(
            dedupe_key=f"bounce-letter:{action_id}", kind="letter", stage=action.stage,
            template=REMINDER_LETTER, customer_id=action.customer_id,
            status=ActionStatus.QUEUED, business_date=today, created_at=now, updated_at=now)
        session.add(task)
        session.flush()
        instead = "a letter by post instead"
    else:
        task = session.execute(
            select(Action).where(col(Action.customer_id) == action.customer_id,
                                 col(Action.kind) == "phone", col(Action.status).in_(READY))
            .order_by(col(Action.id)).limit(1)).scalar()
        instead = "a call instead"
    if task is None:
        collector = session.execute(select(col(Customer.collector)).where(
            col(Customer.id) == action.customer_id)).scalar()
        task = Action(dedupe_key=f"bounce:{action_id}", kind="phone", stage=action.stage,
                      customer_id=action.customer_id, status=ActionStatus.QUEUED,
                      business_date=today, assignee=collector or policy.phone.default_assignee,
                      due_on=today + timedelta(days=policy.phone.due_days), created_at=now,
                      updated_at=now)
        session.add(task)
        session.flush()
    task_id = saved_id(task.id)
    already = set(session.execute(select(col(ActionInvoice.invoice_id)).where(
        col(ActionInvoice.action_id) == task_id)).scalars())
    states = dict(session.execute(select(col(Invoice.id), col(Invoice.state)).where(
        col(Invoice.id).in_([row.invoice_id for row in invoices]))).all())
    why = (f"the {action.stage} email of {action.business_date.isoformat()} bounced: "
           f"{instead}")
    for invoice_id, amount_open, days_overdue in invoices:
        if invoice_id not in already:
            session.add(ActionInvoice(action_id=task_id, invoice_id=invoice_id,
                                      amount_open=amount_open, days_overdue=days_overdue,
                                      reason=why))
        session.add(Transition(invoice_id=invoice_id, event=TransitionEvent.FALLBACK,
                               from_stage=action.stage, to_stage=action.stage,
                               state=states[invoice_id], business_date=today, at=now,
                               reason=why, actor="sendgrid", action_id=task_id))
    # The fallback now carries the stage: the invoices held by the bounce go on once it is
    # delivered (the letter posted, the call worked).
    session.execute(update(Invoice).where(col(Invoice.stage_action_id) == action_id)
                    .values(stage_action_id=task_id, review_on=None, updated_at=now)
                    .execution_options(synchronize_session=False))
    return task_id


def _flag(session: Session, address: str, event: str, reason: str | None,
          action_id: int | None) -> None:
    if session.get(BadAddress, address) is None:
        session.add(BadAddress(address=address, event=event, reason=reason,
                               action_id=action_id, at=utcnow()))


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _when(value: Any) -> datetime | None:
    if isinstance(value, int | float) and 0 < value < 4e9:
        return datetime.fromtimestamp(value, UTC)
    return None


def _detail(item: dict[str, Any]) -> str | None:
    kept = {key: item[key] for key in ("email", "reason", "status", "response", "type",
                                       "attempt") if isinstance(item.get(key), str | int)}
    return json.dumps(kept, ensure_ascii=False)[:DETAIL_LENGTH] if kept else None
