"""The words the tables store for a row's status, as enums. Each is a `StrEnum`: a member is the
string stored in the database (`ActionStatus.SENT == "sent"`), prints and serialises as that
string, and the type checker refuses a misspelt one. The columns hold plain text (dunning.models,
`EnumText`), so adding a member needs no migration."""

from __future__ import annotations

from enum import StrEnum


class ActionStatus(StrEnum):
    """Where an action (a message or task of the outbox) stands."""

    PENDING_APPROVAL = "pending_approval"  # waits for a credit manager
    APPROVED = "approved"  # approved, not yet delivered
    REJECTED = "rejected"  # a credit manager said no
    QUEUED = "queued"  # to deliver at the next dispatch
    SENDING = "sending"  # claimed by a dispatch, outcome not yet recorded
    SENT = "sent"  # delivered (a call task: done)
    FAILED = "failed"  # the last attempt failed; `retryable` says whether to try again
    CANCELLED = "cancelled"  # every invoice it was about left it before delivery
    # The provider may or may not have it (a timeout after the request went out, a crash during
    # the call): never sent again by guess; settled by a delivery event or by a person.
    UNKNOWN = "unknown"
    BOUNCED = "bounced"  # the provider reported a bounce (or a spam report): the address is bad
    DROPPED = "dropped"  # the provider would not send it (a suppressed address)


# Not delivered yet, and still to deliver: what pauses, settlements and calls take invoices out of.
UNDELIVERED: tuple[ActionStatus, ...] = (ActionStatus.PENDING_APPROVAL, ActionStatus.APPROVED,
                                         ActionStatus.QUEUED, ActionStatus.FAILED)
# Ready for a channel: dispatch claims these (with failed ones whose retry is due).
READY: tuple[ActionStatus, ...] = (ActionStatus.QUEUED, ActionStatus.APPROVED)


class InvoiceState(StrEnum):
    ACTIVE = "active"  # the ladder moves it
    PAUSED = "paused"  # disputed, held, promised, insolvent: the ladder leaves it alone
    CLOSED = "closed"  # settled


class TransitionEvent(StrEnum):
    """What a transition records."""

    STAGE = "stage"  # moved up the ladder
    SETTLED = "settled"  # nothing left open
    REOPENED = "reopened"  # open again after it was settled
    PAUSED = "paused"
    RESUMED = "resumed"  # a pause ended or was lifted
    RESOLVED = "resolved"  # a dispute resolved for the creditor, the invoice still paused
    PROMISE_BROKEN = "promise_broken"  # the promised date passed unpaid
    REJECTED = "rejected"  # a proposed step was rejected
    COLLECTED = "collected"  # the agency collected part of it
    FALLBACK = "fallback"  # a message bounced: the stage's fallback (a call task) took over
    MOVED_ON = "moved_on"  # a person let it go on without its stage's message delivered


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"  # its process died; found by the next run


class Decision(StrEnum):
    """A credit manager's word on a proposed action."""

    APPROVED = "approved"
    REJECTED = "rejected"


class CaseStatus(StrEnum):
    """An agency case, as the agency last reported it."""

    OPEN = "open"
    COLLECTED = "collected"
    UNRECOVERABLE = "unrecoverable"


class CaseChannel(StrEnum):
    """How a case reached the agency."""

    API = "api"
    EXPORT = "export"
