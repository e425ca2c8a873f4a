"""Approvals: a person approves a proposed action (its invoices enter the stage) or rejects it
(the ladder will not propose that stage again for them)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.coltypes import utcnow
from dunning.errors import ConflictError, NotFoundError
from dunning.ledger.outbox import drop_from_undelivered, forget_review
from dunning.ledger.transitions import transition_row
from dunning.models import Action, ActionInvoice, Approval, Invoice, Transition
from dunning.policy import Policy
from dunning.statuses import ActionStatus, Decision, InvoiceState, TransitionEvent


def _pending_action(session: Session, action_id: int) -> Action:
    action = session.execute(
        select(Action).where(col(Action.id) == action_id).with_for_update()
    ).scalar_one_or_none()
    if action is None:
        raise NotFoundError(f"no action {action_id}.", "action")
    if action.status != ActionStatus.PENDING_APPROVAL:
        raise ConflictError(
            f"action {action_id} is {action.status}, not waiting for approval; nothing changed"
        )
    return action


def _links(session: Session, action_id: int) -> list[tuple[ActionInvoice, Invoice]]:
    return [
        (link, invoice)
        for link, invoice in session.execute(
            select(ActionInvoice, Invoice)
            .join(Invoice, col(Invoice.id) == col(ActionInvoice.invoice_id))
            .where(col(ActionInvoice.action_id) == action_id,
                   col(ActionInvoice.dropped_reason).is_(None))
            .order_by(col(Invoice.id))
        )
    ]


def approve(
    session: Session, policy: Policy, action_id: int, by: str, comment: str | None, on: date
) -> Action:
    """Approve a proposed action: its invoices enter the stage now (actor: the approver) and the
    action goes out at the next dispatch."""
    action = _pending_action(session, action_id)
    now = utcnow()
    target = policy.stage_index(action.stage)
    entering: list[tuple[ActionInvoice, Invoice]] = []
    stale: list[int] = []
    for link, invoice in _links(session, action_id):
        if invoice.state == InvoiceState.ACTIVE and policy.stage_index(invoice.stage) < target:
            entering.append((link, invoice))
        else:
            stale.append(link.invoice_id)  # the invoice's id (the join's), never None
    if stale:
        drop_from_undelivered(session, stale, "no longer active at approval", now)
    if not entering:
        action.status = ActionStatus.CANCELLED
        action.last_error = "cancelled: none of its invoices can enter the stage any more"
    else:
        action.status = ActionStatus.APPROVED
        note = f"; approved by {by}" + (f": {comment}" if comment else "")
        session.execute(insert(Transition), [
            transition_row(link.invoice_id, TransitionEvent.STAGE,
                           from_stage=invoice.stage, to_stage=action.stage,
                           state=InvoiceState.ACTIVE,
                           on=on, at=now, reason=link.reason + note, actor=by,
                           action_id=action_id)
            for link, invoice in entering
        ])
        # review_on: a new stage, and the proposal that held them back is gone.
        session.execute(update(Invoice), [
            {"id": link.invoice_id, "stage": action.stage, "stage_entered_on": on,
             "stage_action_id": action_id, "updated_at": now, "review_on": None}
            for link, _ in entering
        ])
    action.updated_at = now
    session.add(Approval(action_id=action_id, decision=Decision.APPROVED, by=by, at=now,
                         comment=comment))
    session.flush()
    return action


def reject(session: Session, action_id: int, by: str, reason: str, on: date) -> Action:
    """Reject a proposed action: nothing goes out, and the ladder will not propose that stage
    again for these invoices."""
    action = _pending_action(session, action_id)
    now = utcnow()
    action.status = ActionStatus.REJECTED
    action.updated_at = now
    session.add(Approval(action_id=action_id, decision=Decision.REJECTED, by=by, at=now,
                         comment=reason))
    rows = _links(session, action_id)
    # The stage is now rejected for them and no longer pending: the ladder looks again.
    forget_review(session, [link.invoice_id for link, _ in rows])
    if rows:
        session.execute(insert(Transition), [
            transition_row(link.invoice_id, TransitionEvent.REJECTED,
                           from_stage=invoice.stage, to_stage=invoice.stage,
                           state=invoice.state, on=on, at=now,
                           reason=f"{action.stage} rejected by {by}: {reason}", actor=by,
                           action_id=action_id)
            for link, invoice in rows
        ])
    session.flush()
    return action

