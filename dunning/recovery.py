"""Claims of dispatches that died, and the decisions people take on a delivery.

A dispatch claims actions (`sending`) under its run's id before it delivers them, then records
each outcome. A process killed in between leaves claims nobody will finish. A claim is dead when
its run is no longer `running` (a run found `running` by the next run of its shard died: it no
longer holds the run lock, see dunning.runlock), or, for a claim taken outside a run, when it is
older than CLAIM_TTL. Each run recovers dead claims before it evaluates (and `dunning recover`
does on demand), by what the way of the message can tell:

- the outbox: the message's `.eml` file exists, so it was written: `sent`; no file: `queued`
  again (nothing went out). A formal notice kept as a PDF for a customer without an email
  address is `sent` (posted, not emailed) the same way;
- SendGrid: whether SendGrid took the message cannot be told: `unknown`, never sent again by
  guess; its delivery events or a person settle it;
- the agency and court files: `queued` again (the agency's Idempotency-Key makes a second call
  return the case of the first; a court file is written again, atomically).

Every recovery and every decision of a person is a delivery event (who, why, when).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.channels.email import POST_ONLY
from dunning.coltypes import utcnow
from dunning.db import saved_id
from dunning.dispatch_pool import STAGING_PREFIX
from dunning.errors import ConfigError, ConflictError
from dunning.models import Action, Customer, DeliveryEvent, Run
from dunning.statuses import ActionStatus, RunStatus

# A claim taken outside a run (a dispatch called by a command of its own) is dead after this.
CLAIM_TTL = timedelta(hours=1)
# What a person may send again, or declare sent.
# A bounced or dropped email too, once its address is fixed in the accounting system.
REDELIVERABLE = (ActionStatus.UNKNOWN, ActionStatus.FAILED, ActionStatus.BOUNCED,
                 ActionStatus.DROPPED)
MARKABLE = (ActionStatus.UNKNOWN, ActionStatus.FAILED)


@dataclass
class RecoveryResult:
    sent: list[int] = field(default_factory=list)  # written before the crash
    requeued: list[int] = field(default_factory=list)  # never went out: sent by the next run
    unknown: list[int] = field(default_factory=list)  # a provider may have it: for a person
    resent: list[int] = field(default_factory=list)  # unknown for too long (policy): queued

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "requeued": self.requeued, "unknown": self.unknown,
                "resent": self.resent}

    def __bool__(self) -> bool:
        return bool(self.sent or self.requeued or self.unknown or self.resent)


def dead_claims(now: datetime) -> Any:
    """The condition of an action whose claim nobody will finish."""
    alive_run = exists().where(col(Run.id) == col(Action.claimed_by),
                               col(Run.status) == RunStatus.RUNNING)
    return and_(col(Action.status) == ActionStatus.SENDING, or_(
        and_(col(Action.claimed_by).is_not(None), ~alive_run),
        and_(col(Action.claimed_by).is_(None),
             or_(col(Action.claimed_at).is_(None), col(Action.claimed_at) < now - CLAIM_TTL))))


def recover(session: Session, outbox_dir: Path, letters_dir: Path,
            resend_unknown_after: timedelta | None = None) -> RecoveryResult:
    """Settle every dead claim (see the module's docstring); with `resend_unknown_after`, queue
    again the emails `unknown` for longer without any event from the provider."""
    now = utcnow()
    result = RecoveryResult()
    rows = session.execute(
        select(col(Action.id), col(Action.kind), col(Action.claimed_via), col(Customer.email))
        .join(Customer, col(Customer.id) == col(Action.customer_id))
        .where(dead_claims(now)).order_by(col(Action.id))).all()
    _sweep(outbox_dir)
    written = _written(outbox_dir, {row.id for row in rows}) if rows else {}
    for row_id, kind, via, address in rows:
        action_id = saved_id(row_id)
        eml = written.get(action_id)
        pdf = _letter(letters_dir, action_id) if kind == "letter" else None
        if via in ("outbox", None) and eml is not None:
            _settle(session, action_id, ActionStatus.SENT, f"its file {eml} was written",
                    provider_id=f"outbox:{eml}", document=str(pdf) if pdf else None)
            result.sent.append(action_id)
        elif kind == "letter" and pdf is not None and not (address or "").strip():
            _settle(session, action_id, ActionStatus.SENT,
                    f"its letter {pdf.name} was kept for the post (no email address)",
                    provider_id=POST_ONLY, document=str(pdf))
            result.sent.append(action_id)
        elif via == "outbox" or kind in ("agency", "injunction"):
            _settle(session, action_id, ActionStatus.QUEUED,
                    "it never went out: delivered by the next run")
            result.requeued.append(action_id)
        else:
            _settle(session, action_id, ActionStatus.UNKNOWN,
                    f"{via or 'the provider'} may or may not have it: settle it with its "
                    "delivery events, `dunning redeliver` or `dunning mark-sent`")
            result.unknown.append(action_id)
    if resend_unknown_after is not None:
        heard = exists().where(col(DeliveryEvent.action_id) == col(Action.id),
                               col(DeliveryEvent.source) == "sendgrid")
        for unknown_id in session.execute(
            select(col(Action.id)).where(
                col(Action.status) == ActionStatus.UNKNOWN, col(Action.kind) == "email",
                col(Action.updated_at) < now - resend_unknown_after, ~heard)).scalars():
            action_id = saved_id(unknown_id)
            hours = int(resend_unknown_after.total_seconds() // 3600)
            _settle(session, action_id, ActionStatus.QUEUED,
                    f"unknown for {hours} hours without a delivery event "
                    "(email.resend_unknown_after_hours): sent again", event="resend_unknown",
                    source="run")
            result.resent.append(action_id)
    return result


def _sweep(outbox: Path) -> None:
    """Remove the folders of dispatch workers that died (dunning/dispatch_pool.py): what is
    left in them was never renamed into the outbox, so never written."""
    for folder in outbox.glob(f"{STAGING_PREFIX}*") if outbox.is_dir() else ():
        pid = folder.name.removeprefix(STAGING_PREFIX)
        if pid.isdigit() and _alive(int(pid)):
            continue
        for leftover in folder.iterdir():
            leftover.unlink(missing_ok=True)
        folder.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:  # a zombie (dead, not yet reaped: in a container, PID 1 may never reap it) is dead
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _written(folder: Path, ids: set[int]) -> dict[int, str]:
    """The outbox's files of these actions (named `<action id, 8 digits or more>_<key>.eml`).
    A half-written one (`.eml.tmp`: the process died before renaming it) was never written:
    removed, as nobody will finish it (the claims of these actions are dead)."""
    found: dict[int, str] = {}
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            head = entry.name.split("_", 1)[0]  # eight digits at least (Outbox.write)
            if not head.isdigit() or int(head) not in ids:
                continue
            if entry.name.endswith(".eml"):
                found[int(head)] = entry.name
            elif entry.name.endswith(".eml.tmp"):
                Path(entry.path).unlink(missing_ok=True)
    return found


def _letter(folder: Path, action_id: int) -> Path | None:
    found = sorted(folder.glob(f"*_{action_id:08d}_*.pdf")) if folder.is_dir() else []
    return found[0] if found else None


def _settle(session: Session, action_id: int, status: ActionStatus, reason: str, *,
            event: str | None = None, source: str = "recovery", by: str | None = None,
            **values: Any) -> None:
    now = utcnow()
    if status == ActionStatus.SENT:
        values.setdefault("sent_at", now)
        values["last_error"] = None
    if status == ActionStatus.UNKNOWN:
        values["last_error"] = reason
    session.execute(update(Action).where(col(Action.id) == action_id)
                    .values(status=status, updated_at=now, **values))
    session.add(DeliveryEvent(action_id=action_id, event=event or f"recovered_{status}",
                              source=source, by=by, reason=reason, at=now))


def redeliver(session: Session, action_id: int, by: str, reason: str | None) -> Action:
    """A person sends an `unknown` or failed message again: queued for the next run (a failure
    the provider refused, a 4xx, too), recorded with who and why."""
    action = _action(session, action_id, REDELIVERABLE, "sent again")
    _settle(session, action_id, ActionStatus.QUEUED, reason or "sent again by a person",
            event="redeliver", source="person", by=by, retryable=True, attempted_on=None,
            last_error=None)
    session.refresh(action)
    return action


def mark_sent(session: Session, action_id: int, by: str, reason: str) -> Action:
    """A person declares an `unknown` or failed message delivered (seen in the provider's
    activity feed, confirmed by the customer): recorded with who and why."""
    action = _action(session, action_id, MARKABLE, "marked sent")
    _settle(session, action_id, ActionStatus.SENT, reason, event="mark_sent", source="person",
            by=by)
    session.refresh(action)
    return action


def _action(session: Session, action_id: int, allowed: tuple[ActionStatus, ...],
            verb: str) -> Action:
    action = session.get(Action, action_id, with_for_update=True)
    if action is None:
        raise ConfigError(f"action {action_id} does not exist (see `dunning actions`)")
    if action.kind not in ("email", "letter"):
        raise ConfigError(f"action {action_id} is a {action.kind} action: only emails and "
                          f"letters can be {verb}")
    if action.status not in allowed:
        raise ConflictError(f"action {action_id} is {action.status}: only an action "
                          f"{' or '.join(allowed)} can be {verb}")
    return action
