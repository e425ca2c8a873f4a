"""The CSV snapshot: customers.csv and invoices.csv, UTF-8 with a header row."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from dunning.errors import SnapshotError
from dunning.policy import LANGUAGES
from dunning.sources.snapshot import CustomerRow, InvoiceRow, Reject, Snapshot

CUSTOMER_REQUIRED = ("customer_id", "name")
INVOICE_REQUIRED = ("invoice_id", "customer_id", "due_date", "amount", "amount_open")
_EMAIL = re.compile(r"^[^@\s;,]+@[^@\s;,]+\.[^@\s;,]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class RowError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) with stripped values; refuse a missing file or header first."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise SnapshotError(f"{path}: file not found; nothing was changed") from None
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read: {exc.strerror}; nothing was changed") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{path}: line 1: unreadable header: {exc}") from None
        if not header or not any(cell.strip() for cell in header):
            raise SnapshotError(f"{path}: no header row; nothing was changed")
        names = [cell.strip().lower() for cell in header]
        missing = [name for name in required if name not in names]
        if missing:
            raise SnapshotError(
                f"{path}: line 1: header lacks required column(s) {', '.join(missing)}; "
                "nothing was changed"
            )
        line = reader.line_num + 1
        try:
            for cells in reader:
                start, line = line, reader.line_num + 1
                if not any(cell.strip() for cell in cells):
                    continue
                row = {name: (cells[i].strip() if i < len(cells) else "") for i, name in
                       enumerate(names) if name}
                yield start, row
        except UnicodeDecodeError as exc:
            raise SnapshotError(
                f"{path}: not valid UTF-8 near byte {exc.start}; nothing was changed"
            ) from None
        except csv.Error as exc:
            raise SnapshotError(f"{path}: line {reader.line_num}: {exc}; nothing was changed") \
                from None


def _required(row: dict[str, str], name: str) -> str:
    value = row.get(name, "")
    if not value:
        raise RowError(name, "required value is missing")
    return value


def _date(row: dict[str, str], name: str, required: bool = False) -> date | None:
    value = _required(row, name) if required else row.get(name, "")
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RowError(name, f"{value!r} is not a date (expected YYYY-MM-DD)") from None


def _decimal(row: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    value = _required(row, name) if required else row.get(name, "")
    if not value:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise RowError(name, f"{value!r} is not an amount (digits with '.' as decimal point)")
    if amount.as_tuple().exponent < -4:  # type: ignore[operator]
        raise RowError(name, f"{value!r} has more than 4 decimals")
    return amount


def _emails(value: str) -> str | None:
    if not value:
        return None
    addresses = [part.strip() for part in re.split(r"[;,]", value) if part.strip()]
    for address in addresses:
        if not _EMAIL.match(address):
            raise RowError("email", f"{address!r} is not an email address")
    return "; ".join(addresses)


def _customer(row: dict[str, str], default_language: str) -> CustomerRow:
    external_id = _required(row, "customer_id")
    name = _required(row, "name")
    language = row.get("language", "").lower().replace("-", "_")[:2] or default_language
    if language not in LANGUAGES:
        raise RowError("language", f"{row['language']!r} is not one of {', '.join(LANGUAGES)}")
    country = row.get("country", "").upper() or None
    if country is not None and not _COUNTRY.match(country):
        raise RowError("country", f"{row['country']!r} is not an ISO 3166 alpha-2 code")
    limit = _decimal(row, "credit_limit")
    return CustomerRow(
        external_id=external_id,
        name=name,
        email=_emails(row.get("email", "")),
        phone=row.get("phone") or None,
        language=language,
        country=country,
        credit_limit=limit,
        segment=row.get("segment") or None,
        collector=row.get("collector") or None,
    )


def _invoice(row: dict[str, str], default_currency: str) -> InvoiceRow:
    external_id = _required(row, "invoice_id")
    customer = _required(row, "customer_id")
    due = _date(row, "due_date", required=True)
    issued = _date(row, "issue_date")
    currency = row.get("currency", "").upper() or default_currency
    if not _CURRENCY.match(currency):
        raise RowError("currency", f"{row['currency']!r} is not an ISO 4217 code")
    amount = _decimal(row, "amount", required=True)
    amount_open = _decimal(row, "amount_open", required=True)
    assert due is not None and amount is not None and amount_open is not None
    if amount >= 0 and not 0 <= amount_open <= amount:
        raise RowError("amount_open", f"{amount_open} is not between 0 and the amount {amount}")
    if amount < 0 and not amount <= amount_open <= 0:
        raise RowError(
            "amount_open", f"{amount_open} is not between the credit note's amount {amount} and 0"
        )
    if issued is not None and due < issued:
        raise RowError("due_date", f"{due} is before the issue date {issued}")
    return InvoiceRow(
        external_id=external_id,
        customer_external_id=customer,
        number=row.get("number") or None,
        issue_date=issued,
        due_date=due,
        currency=currency,
        amount=amount,
        amount_open=amount_open,
    )


def read_csv_snapshot(
    customers_path: Path,
    invoices_path: Path,
    *,
    default_language: str = "fr",
    default_currency: str = "EUR",
) -> Snapshot:
    """Read both files; bad rows become rejects naming file, line and field."""
    snapshot = Snapshot()
    # Open both before reading anything: a missing file is refused as a whole.
    customer_records = _records(customers_path, CUSTOMER_REQUIRED)
    invoice_records = _records(invoices_path, INVOICE_REQUIRED)
    first_customers = next(customer_records, None)
    first_invoices = next(invoice_records, None)

    customer_lines: dict[str, int] = {}
    rejected_customers: dict[str, int] = {}
    file = customers_path.name
    for line, row in _chain(first_customers, customer_records):
        key = row.get("customer_id") or None
        if key is not None and key in customer_lines:
            snapshot.rejects.append(Reject(file, line, "customer_id",
                                           f"duplicate {key!r}, first on line "
                                           f"{customer_lines[key]}", key))
            continue
        try:
            customer = _customer(row, default_language)
        except RowError as exc:
            snapshot.rejects.append(Reject(file, line, exc.field, str(exc), key))
            if key is not None:
                rejected_customers[key] = line
            continue
        customer_lines[customer.external_id] = line
        snapshot.customers.append(customer)

    invoice_lines: dict[str, int] = {}
    file = invoices_path.name
    for line, row in _chain(first_invoices, invoice_records):
        key = row.get("invoice_id") or None
        if key is not None:
            if key in invoice_lines:
                snapshot.rejects.append(Reject(file, line, "invoice_id",
                                               f"duplicate {key!r}, first on line "
                                               f"{invoice_lines[key]}", key))
                continue
            invoice_lines[key] = line
            snapshot.seen_invoice_ids.add(key)
        try:
            invoice = _invoice(row, default_currency)
            if invoice.customer_external_id not in customer_lines:
                if invoice.customer_external_id in rejected_customers:
                    raise RowError("customer_id", f"customer {invoice.customer_external_id!r} "
                                   f"was rejected ({customers_path.name} line "
                                   f"{rejected_customers[invoice.customer_external_id]})")
                raise RowError("customer_id", f"unknown customer {invoice.customer_external_id!r}"
                               f" (not in {customers_path.name})")
        except RowError as exc:
            snapshot.rejects.append(Reject(file, line, exc.field, str(exc), key))
            continue
        snapshot.invoices.append(invoice)
    return snapshot


def _chain(
    first: tuple[int, dict[str, str]] | None, rest: Iterator[tuple[int, dict[str, str]]]
) -> Iterator[tuple[int, dict[str, str]]]:
    if first is not None:
        yield first
        yield from rest
