"""The message every channel renders (an email, a formal notice, an agency case, a court file):
the customer, its invoices and what was sent before, read once from the ledger; and what
rendering an email gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class Line:
    number: str
    issue_date: date | None
    due_date: date
    currency: str
    amount: Decimal
    amount_open: Decimal
    days_overdue: int
    invoice_ref: str = ""  # the invoice's id in the accounting system
    # Where an email lists it (SECTIONS): already reminded, now overdue, due soon; "" in a
    # document without sections (a formal notice, an agency case).
    section: str = ""


# The sections of a customer's email, in the order it lists them.
SECTIONS = ("already_reminded", "now_overdue", "due_soon")


@dataclass(frozen=True)
class Message:
    """Everything one reminder says, before rendering."""

    customer_ref: str
    customer_name: str
    language: str
    country: str | None
    recipients: tuple[str, ...]
    stage: str
    template: str
    as_of: date
    lines: tuple[Line, ...]
    customer_address: str | None = None
    customer_legal_id: str | None = None
    reminders: tuple[tuple[date, str], ...] = ()  # what was sent before: (date, stage)
    customer_phone: str | None = None
    bounced: tuple[str, ...] = ()  # the customer's addresses left out: a provider said bad


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mimetype: str
    content_id: str | None = None  # set: shown inside the HTML (`<img src="cid:...">`)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    recipients: tuple[str, ...]
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
