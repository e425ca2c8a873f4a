"""The tables: customers and invoices mirror the snapshot; transitions, actions, approvals and
runs are ours. Transitions are append-only; an action is an outbox row with a unique dedupe key."""

from __future__ import annotations

import zlib
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel

from dunning.coltypes import E, EnumText, Money, UTCDateTime, utcnow
from dunning.statuses import (
    ActionStatus,
    CaseChannel,
    CaseStatus,
    Decision,
    InvoiceState,
    RunStatus,
    TransitionEvent,
)


def shard_key(external_id: str) -> int:
    """The stable hash of a customer id: crc32 of its UTF-8 bytes (0 .. 2**32 - 1)."""
    return zlib.crc32(external_id.encode("utf-8"))


def _shard_key_default(context: Any) -> int:
    return shard_key(context.get_current_parameters()["external_id"])


def _status(enum: type[E], length: int, default: Any = ...) -> Any:
    """A required status column (`...`: no default, the writer says which)."""
    return Field(default=default, sa_type=EnumText(enum, length), nullable=False)


def _money(nullable: bool = False) -> Any:
    return Field(sa_column=Column(Money(), nullable=nullable))


def _stamp(nullable: bool = False) -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=nullable))


class Customer(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(unique=True, max_length=100)
    name: str
    email: str | None = None
    phone: str | None = None
    language: str = Field(max_length=8)
    country: str | None = Field(default=None, max_length=2)
    credit_limit: Decimal | None = _money(nullable=True)
    segment: str | None = None
    address: str | None = None  # postal, for letters; lines separated by "\n"
    legal_id: str | None = None  # e.g. SIREN, VAT or company number
    collector: str | None = None
    # crc32 of external_id: the customer is in shard K of N when shard_key % N == K - 1
    # (dunning/shards.py); set on insert from the id, so every process agrees.
    shard_key: int = Field(default=None, sa_column=Column(BigInteger(), nullable=False,
                                                          default=_shard_key_default))
    hold_until: date | None = None
    hold_reason: str | None = None
    updated_at: datetime = _stamp()


class Invoice(SQLModel, table=True):
    __table_args__ = (Index("ix_invoice_state_customer", "state", "customer_id"),
                      Index("ix_invoice_state_review", "state", "review_on", "customer_id"))

    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(unique=True, max_length=100)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    number: str | None = None
    issue_date: date | None = None
    due_date: date
    currency: str = Field(max_length=3)
    amount: Decimal = _money()
    amount_open: Decimal = _money()
    stage: str | None = Field(default=None, max_length=64)
    stage_entered_on: date | None = None
    # The message or task that carried the current stage to the customer (the stage's action,
    # or the fallback that replaced it): the ladder goes on from the stage once it is delivered
    # (dunning/ledger/delivery.py). NULL: none to wait for (set by hand, or moved on by a person).
    stage_action_id: int | None = None
    state: InvoiceState = _status(InvoiceState, 16, InvoiceState.ACTIVE)
    state_reason: str | None = None
    paused_until: date | None = None
    closed_on: date | None = None
    # Collected by a collection agency and not necessarily booked yet by the accounting system:
    # the ledger's open amount never exceeds amount - agency_collected (see ledger.reconcile).
    agency_collected: Decimal | None = _money(nullable=True)
    # The first business date on which the ladder may move the invoice, as computed by the last
    # run that evaluated it (dunning/ladder.py, `review_after`): runs before it leave the
    # invoice alone. NULL: evaluate at the next run (a new invoice, or one whose facts changed);
    # 9999-12-31: not before its facts change. Whatever changes an input of decide() (amounts,
    # dates, currency, stage, state, the customer's hold, a proposal approved or rejected) sets
    # it back to NULL in the same transaction.
    review_on: date | None = None
    updated_at: datetime = _stamp()


class Transition(SQLModel, table=True):
    """One change of an invoice's stage or state; never updated, never deleted."""

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    event: TransitionEvent = _status(TransitionEvent, 16)
    from_stage: str | None = None
    to_stage: str | None = None
    state: InvoiceState = _status(InvoiceState, 16)  # the invoice's state after the change
    business_date: date
    at: datetime = _stamp()
    reason: str
    detail: str | None = None
    actor: str = Field(max_length=100)
    run_id: str | None = Field(default=None, max_length=64, index=True)
    action_id: int | None = Field(default=None, foreign_key="action.id")


class Action(SQLModel, table=True):
    """A message or task to deliver; its status says what happened to it."""

    __table_args__ = (Index("ix_action_status_kind", "status", "kind"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(unique=True, max_length=200)
    kind: str = Field(max_length=16)  # the channel: email | phone | letter | agency | injunction
    stage: str = Field(max_length=64)
    template: str | None = None
    customer_id: int = Field(foreign_key="customer.id", index=True)
    status: ActionStatus = _status(ActionStatus, 20)
    business_date: date
    run_id: str | None = Field(default=None, max_length=64)
    attempts: int = 0
    attempted_on: date | None = None  # business date of the last delivery attempt
    retryable: bool = True
    assignee: str | None = Field(default=None, max_length=100)  # call tasks: who calls
    due_on: date | None = None  # call tasks: when the call is due
    provider_id: str | None = None  # SendGrid message id, outbox file, agency case id
    document: str | None = None  # what was produced: the letter PDF, the court file's zip
    last_error: str | None = None
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # The claim of a dispatch (status `sending`): the run that holds it, the way the message
    # goes (outbox, sendgrid, agency, court) and when it was taken. A claim of a run that is no
    # longer running is dead, and recovered (dunning/recovery.py).
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_via: str | None = Field(default=None, max_length=16)
    claimed_at: datetime | None = Field(default=None,
                                        sa_column=Column(UTCDateTime(), nullable=True))


class DeliveryEvent(SQLModel, table=True):
    """What is known of an action's delivery besides its status: a provider's event (SendGrid's
    `processed`, `delivered`, `bounce`...), a recovery of a dead claim, or a person's decision
    (`redeliver`, `mark_sent`), with who and why. Never changed once written."""

    __tablename__ = "delivery_event"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int | None = Field(default=None, foreign_key="action.id", index=True)
    event: str = Field(max_length=32)
    source: str = Field(max_length=16)  # sendgrid | recovery | person | run
    # A provider's own id of the event (SendGrid's sg_event_id): an event received twice is
    # recorded once.
    provider_event_id: str | None = Field(default=None, max_length=100, unique=True)
    by: str | None = Field(default=None, max_length=100)
    reason: str | None = None
    detail: str | None = None  # the provider's words (bounce reason...), bounded
    occurred_at: datetime | None = Field(default=None,
                                         sa_column=Column(UTCDateTime(), nullable=True))
    at: datetime = _stamp()


class BadAddress(SQLModel, table=True):
    """An email address a provider reported bad (a bounce, a drop, a spam report): no later
    message is attempted to it, until the accounting system gives the customer another."""

    __tablename__ = "bad_address"

    address: str = Field(primary_key=True, max_length=320)  # lower case
    event: str = Field(max_length=32)
    reason: str | None = None
    action_id: int | None = Field(default=None, foreign_key="action.id")
    at: datetime = _stamp()


class ActionInvoice(SQLModel, table=True):
    """The invoices an action is about, with their figures when it was decided. An invoice settled
    before delivery is dropped (kept here with the reason) so the message never mentions it."""

    __tablename__ = "action_invoice"

    action_id: int = Field(foreign_key="action.id", primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", primary_key=True, index=True)
    amount_open: Decimal = _money()
    days_overdue: int
    reason: str
    dropped_reason: str | None = None


class Approval(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="action.id", index=True)
    decision: Decision = _status(Decision, 16)
    by: str = Field(max_length=100)
    at: datetime = _stamp()
    comment: str | None = None


class Run(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    business_date: date = Field(index=True)
    started_at: datetime = _stamp()
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    status: RunStatus = _status(RunStatus, 16, RunStatus.RUNNING)
    shard: str | None = Field(default=None, max_length=16)  # "K/N"; None: every customer
    # ladder.fingerprint() of the policy this run evaluated under (None: it evaluated nothing);
    # review dates computed under another ladder are not trusted (ledger.trusts_review_dates).
    ladder_fingerprint: str | None = Field(default=None, max_length=64)
    # What reconcile settled: the mass-settlement guard's history (dunning/mass_settlement.py).
    # None: a run from before they were recorded. `mass_settlement`: the guard objected and
    # --accept-mass-settlement confirmed it, so the day does not count as a normal one.
    settled_invoices: int | None = None
    settled_customers: int | None = None
    settled_amount: Decimal | None = _money(nullable=True)
    mass_settlement: bool = False
    invoices_seen: int = 0
    rejected_rows: int = 0
    transitions: int = 0
    actions_created: int = 0
    actions_sent: int = 0
    actions_failed: int = 0


class CallOutcome(SQLModel, table=True):
    """What a collector recorded after a call (or an attempt)."""

    __tablename__ = "call_outcome"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="action.id", index=True)
    outcome: str = Field(max_length=20)
    by: str = Field(max_length=100)
    at: datetime = _stamp()
    business_date: date
    until: date | None = None  # promise: pay by; callback: call again on
    amount: Decimal | None = _money(nullable=True)
    note: str | None = None


class AgencyCase(SQLModel, table=True):
    """A case handed to the collection agency (one per delivered agency action), and what the
    agency last said about it."""

    __tablename__ = "agency_case"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="action.id", unique=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    reference: str = Field(max_length=200)  # ours, sent in the case and as Idempotency-Key
    agency_case_id: str | None = Field(default=None, max_length=200)  # None: exported as files
    channel: CaseChannel = _status(CaseChannel, 16)
    status: CaseStatus = _status(CaseStatus, 20, CaseStatus.OPEN)
    opened_on: date
    closed_on: date | None = None
    collected: Decimal = _money()  # in total, as last reported by the agency
    agency_status: str | None = None  # the agency's own word for the status, and its note
    synced_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )


class LetterPosting(SQLModel, table=True):
    """A formal notice handed to the post as registered mail: its tracking number and the
    business date it was posted on, as a person recorded them (the letter's proof of sending)."""

    __tablename__ = "letter_posting"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="action.id", unique=True)
    # The registered-mail number, without spaces, in capitals: each letter has its own. None:
    # a reminder letter, posted by ordinary mail.
    tracking: str | None = Field(default=None, max_length=64, unique=True)
    posted_on: date
    by: str = Field(max_length=100)
    at: datetime = _stamp()


def _length(table: str, column: str) -> int:
    length = getattr(SQLModel.metadata.tables[table].c[column].type, "length", None)
    assert isinstance(length, int), f"{table}.{column} has no length"
    return length


# The longest value a snapshot may bring in each text field (customers.csv, invoices.csv, or the
# same fields of the HTTP source's items): a longer one rejects its row when it is read
# (dunning/sources/rows.py), on every database. Ids take their columns' lengths, so that nothing
# longer ever reaches PostgreSQL (which refuses it, aborting the run) or SQLite (which keeps it,
# and file names built from it). Free text has no length in the database (narrowing a column
# would fail on longer values already stored): these bounds are far above real data and keep a
# letter's PDF, an email header and a report readable. Documented in README.md ("Field limits").
SNAPSHOT_LIMITS: dict[str, dict[str, int]] = {
    "customers": {
        "customer_id": _length("customer", "external_id"),
        "name": 200,
        "email": 1000,  # the whole cell, several addresses; each at most EMAIL_ADDRESS_LENGTH
        "phone": 50,
        "segment": 100,
        "collector": _length("action", "assignee"),  # becomes the call task's assignee
        "address": 500,
        "legal_id": 50,
    },
    "invoices": {
        "invoice_id": _length("invoice", "external_id"),
        "customer_id": _length("customer", "external_id"),
        "number": 100,
    },
}
# RFC 5321 section 4.5.3.1.3: a path is at most 256 octets, angle brackets included.
EMAIL_ADDRESS_LENGTH = 254
