"""What a source produces: the customers and invoices it could read, and the rows it rejected."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CustomerRow:
    external_id: str
    name: str
    email: str | None
    phone: str | None
    language: str
    country: str | None
    credit_limit: Decimal | None
    segment: str | None
    collector: str | None = None
    address: str | None = None
    legal_id: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    external_id: str
    customer_external_id: str
    number: str | None
    issue_date: date | None
    due_date: date
    currency: str
    amount: Decimal
    amount_open: Decimal


@dataclass(frozen=True, slots=True)
class Reject:
    """A row left out of the snapshot, and why: file, line and field."""

    file: str
    line: int
    field: str
    message: str
    key: str | None = None  # the row's id when it could be read

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "id": self.key,
        }


@dataclass(slots=True)
class Snapshot:
    customers: list[CustomerRow] = field(default_factory=list)
    invoices: list[InvoiceRow] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # Ids present in the files, rejected rows included: a bad row must never settle an invoice.
    seen_invoice_ids: set[str] = field(default_factory=set)
