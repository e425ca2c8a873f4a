"""Whether the message that carried an invoice's current stage reached the customer: the ladder
goes on from a stage only once it did (dunning/ladder.py reads `delivered_on` and `held`).

A stage is delivered when its action is: an email sent (SendGrid took it, or reported it
delivered); a formal notice posted (its registered-mail posting recorded) or its email copy
sent; a call task worked (an outcome recorded, or its attempts used up); an agency case or court
file handed over. A fallback that replaced a bounced email (a reminder letter, posted; a call
task, worked) becomes the stage's action. A step queued, failed, bounced, dropped or of unknown
outcome holds the invoice at its stage, with the reason, until it is delivered, a fallback
reaches the customer, or a person moves it on (`move_on`: emails, calls and reminder letters; a
formal notice, an agency case or a court file is never skipped, so no agency case or court file
follows a notice that did not reach the debtor).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.channels.email import POST_ONLY
from dunning.channels.letter import REMINDER_LETTER
from dunning.coltypes import utcnow
from dunning.db import chunks, saved_id, table_of
from dunning.errors import ConfigError, ConflictError, NotFoundError
from dunning.ledger.transitions import transition_row
from dunning.models import (
    Action,
    ActionInvoice,
    DeliveryEvent,
    Invoice,
    LetterPosting,
    Transition,
)
from dunning.policy import Policy
from dunning.statuses import ActionStatus, InvoiceState, TransitionEvent

# A hold a person may lift: the message is not a document a later step relies on.
MOVABLE_KINDS = ("email", "phone")


@dataclass(frozen=True, slots=True)
class Delivery:
    """The stage's delivery date, or why it is not delivered (exactly one is set)."""

    delivered_on: date | None = None
    held: str | None = None


def stage_deliveries(session: Session, stage_actions: dict[int, int]) -> dict[int, Delivery]:
    """For invoices `{invoice id: its stage's action id}`: how their stage stands (see the
    module's docstring). Reads the actions a chunk at a time by primary key."""
    ids = sorted(set(stage_actions.values()))
    actions: dict[int, Any] = {}
    posted: dict[int, date] = {}
    dropped: dict[tuple[int, int], str] = {}
    for part in chunks(ids):
        for found in session.execute(
            select(col(Action.id), col(Action.kind), col(Action.stage), col(Action.status),
                   col(Action.attempted_on), col(Action.business_date),
                   col(Action.provider_id), col(Action.last_error), col(Action.retryable),
                   col(Action.assignee), col(Action.due_on), col(Action.template))
            .where(col(Action.id).in_(part))
        ):
            actions[saved_id(found.id)] = found
        letters = [i for i in part if i in actions and actions[i].kind == "letter"]
        if letters:
            posted.update((saved_id(a), on) for a, on in session.execute(
                select(col(LetterPosting.action_id), col(LetterPosting.posted_on))
                .where(col(LetterPosting.action_id).in_(letters))))
        for action_id, invoice_id, why_left in session.execute(
            select(col(ActionInvoice.action_id), col(ActionInvoice.invoice_id),
                   col(ActionInvoice.dropped_reason))
            .where(col(ActionInvoice.action_id).in_(part),
                   col(ActionInvoice.dropped_reason).is_not(None))
        ):
            dropped[(action_id, invoice_id)] = why_left or ""
    out: dict[int, Delivery] = {}
    for invoice_id, action_id in stage_actions.items():
        row = actions.get(action_id)
        if row is None:  # removed by hand: nothing left to wait for
            continue
        left = dropped.get((action_id, invoice_id))
        if left is not None:
            out[invoice_id] = Delivery(held=f"it left its {row.stage} "
                                            f"{_noun(row.kind, row.template)} "
                                            f"(action {action_id}) before it went out ({left})")
        else:
            out[invoice_id] = _delivery(action_id, row, posted.get(action_id))
    return out


def _noun(kind: str, template: str | None = None) -> str:
    if template == REMINDER_LETTER:
        return "reminder letter"
    return {"email": "email", "letter": "formal notice", "phone": "call task",
            "agency": "agency case", "injunction": "court file"}.get(kind, kind)


def _delivery(action_id: int, row: Any, posted_on: date | None) -> Delivery:
    status, kind = row.status, row.kind
    on = row.attempted_on or row.business_date
    what = f"its {row.stage} {_noun(kind, row.template)} (action {action_id})"
    if posted_on is not None:
        return Delivery(delivered_on=posted_on)
    if kind == "phone":
        if status == ActionStatus.SENT or (status == ActionStatus.FAILED and not row.retryable):
            return Delivery(delivered_on=on)
        if status in (ActionStatus.QUEUED, ActionStatus.APPROVED):
            due = f", due {row.due_on}" if row.due_on else ""
            return Delivery(held=f"{what} is not worked yet ({row.assignee}{due})")
    elif status == ActionStatus.SENT:
        if kind == "letter" and row.template == REMINDER_LETTER:
            return Delivery(held=f"{what} waits to be posted: record its posting with "
                                 f"`dunning letter-posted {action_id} --on DATE`")
        if kind == "letter" and row.provider_id == POST_ONLY:
            return Delivery(held=f"{what} waits to be posted (no email address): record its "
                                 f"posting with `dunning letter-posted {action_id}`")
        return Delivery(delivered_on=on)
    if status in (ActionStatus.QUEUED, ActionStatus.APPROVED, ActionStatus.SENDING):
        return Delivery(held=f"{what} has not gone out yet ({status})")
    if status == ActionStatus.FAILED:
        again = "; retried at the next run" if row.retryable else ""
        return Delivery(held=f"{what} failed: {row.last_error or 'no detail'}{again}")
    if status == ActionStatus.UNKNOWN:
        return Delivery(held=f"{what} may or may not have gone out: a delivery event settles "
                             f"it, or `dunning redeliver {action_id}` / `dunning mark-sent "
                             f"{action_id}`")
    if status in (ActionStatus.BOUNCED, ActionStatus.DROPPED):
        then = (f"; it is delivered once posted (`dunning letter-posted {action_id}`)"
                if kind == "letter" else "")
        return Delivery(held=f"{what} {status}: {row.last_error or 'reported by SendGrid'}"
                             f"{then}")
    return Delivery(held=f"{what} is {status} and never reached the customer")


def held_by(session: Session, action_id: int) -> list[Invoice]:
    """The active invoices whose stage waits on the action `action_id`."""
    return list(session.execute(
        select(Invoice).where(col(Invoice.stage_action_id) == action_id,
                              col(Invoice.state) == InvoiceState.ACTIVE)
        .order_by(col(Invoice.id)).with_for_update()).scalars())


def move_on(session: Session, policy: Policy, action_id: int, *, by: str, reason: str,
            on: date) -> dict[str, Any]:
    """A person lets the invoices held by an undelivered email, call task or reminder letter go
    on up the ladder (the customer was reached another way, or will not be by this channel),
    recorded with who and why on each invoice."""
    if not reason.strip():
        raise ConfigError("say why the invoices go on without this message (--reason)")
    action = session.get(Action, action_id, with_for_update=True)
    if action is None:
        raise NotFoundError(f"no action {action_id}", what="action")
    if action.kind not in MOVABLE_KINDS and action.template != REMINDER_LETTER:
        proof = ("record its posting with `dunning letter-posted`" if action.kind == "letter"
                 else "deliver it (`dunning redeliver`)")
        raise ConflictError(f"action {action_id} is a {_noun(action.kind)}: a later step "
                            f"relies on it, so it is never skipped; {proof}. Nothing changed.")
    invoices = held_by(session, action_id)
    delivery = stage_deliveries(session, {saved_id(i.id): action_id for i in invoices})
    waiting = [i for i in invoices if delivery.get(saved_id(i.id), Delivery()).held]
    if not waiting:
        raise ConflictError(f"no active invoice waits on action {action_id} ({action.status}): "
                            "nothing to move on. Nothing changed.")
    following = _following_channel(policy, action.stage)
    if following in ("agency", "injunction"):
        raise ConflictError(f"the stage after {action.stage} hands the debt over "
                            f"({following}): it needs this message delivered, not skipped. "
                            "Nothing changed.")
    now = utcnow()
    ids = [saved_id(i.id) for i in waiting]
    why = f"moved on without its {action.stage} {_noun(action.kind, action.template)} " \
          f"(action {action_id}): " \
          f"{reason.strip()}"
    for part in chunks(ids):
        session.execute(update(Invoice).where(col(Invoice.id).in_(part))
                        .values(stage_action_id=None, review_on=None, updated_at=now)
                        .execution_options(synchronize_session=False))
    session.execute(table_of(Transition).insert(), [
        transition_row(saved_id(i.id), TransitionEvent.MOVED_ON, from_stage=i.stage,
                       to_stage=i.stage, state=InvoiceState.ACTIVE, on=on, at=now, reason=why,
                       actor=by, action_id=action_id) for i in waiting])
    session.add(DeliveryEvent(action_id=action_id, event="move_on", source="person", by=by,
                              reason=reason.strip(), at=now))
    return {"action_id": action_id, "status": str(action.status), "stage": action.stage,
            "by": by, "reason": reason.strip(),
            "invoices": sorted(i.external_id for i in waiting)}


def _following_channel(policy: Policy, stage: str) -> str | None:
    index = policy.stage_index(stage)
    if index < 0 or index + 1 >= len(policy.stages):
        return None
    return policy.stages[index + 1].channel


def with_stage_actions(pairs: Iterable[tuple[int, int | None]]) -> dict[int, int]:
    """`{invoice id: stage action id}` of the pairs that have one."""
    return {invoice_id: action_id for invoice_id, action_id in pairs if action_id is not None}
