"""Turning one source row (a dict of strings) into a customer or an invoice, or a reject naming
where it came from and which field is wrong. Shared by every source."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from email.errors import HeaderParseError
from email.headerregistry import Address

import idna

from dunning.models import EMAIL_ADDRESS_LENGTH, SNAPSHOT_LIMITS
from dunning.policy import LANGUAGES
from dunning.sources.snapshot import CustomerRow, InvoiceRow, Reject, Snapshot

CUSTOMER_REQUIRED = ("customer_id", "name")
INVOICE_REQUIRED = ("invoice_id", "customer_id", "due_date", "amount", "amount_open")
_EMAIL = re.compile(r"^[^@\s;,]+@[^@\s;,]+\.[^@\s;,]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
_AMOUNT = re.compile(r"^-?\d{1,14}(\.\d{1,4})?$", re.ASCII)
_CUSTOMER_LIMITS = tuple(SNAPSHOT_LIMITS["customers"].items())
_INVOICE_LIMITS = tuple(SNAPSHOT_LIMITS["invoices"].items())
_CUSTOMER_ID_LENGTH = SNAPSHOT_LIMITS["customers"]["customer_id"]
_INVOICE_ID_LENGTH = SNAPSHOT_LIMITS["invoices"]["invoice_id"]
_NUMBER_LENGTH = SNAPSHOT_LIMITS["invoices"]["number"]


def ten_thousandths(text: str) -> int:
    """A plain amount (`_AMOUNT`) as an integer of ten-thousandths, exactly."""
    whole, _, fraction = text.partition(".")
    return int(whole + fraction.ljust(4, "0"))


class RowError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _shown(value: str, width: int = 40) -> str:
    """A value quoted in a message, cut short: a reject never repeats a huge cell."""
    return repr(value) if len(value) <= width else f"{value[:width]!r}… ({len(value)} characters)"


def _too_long(value: str, limit: int) -> str:
    return f"{len(value)} characters, more than the {limit} allowed: {value[:20]!r}…"


def _within(row: dict[str, str], limits: tuple[tuple[str, int], ...]) -> None:
    for name, limit in limits:
        value = row.get(name)
        if value is not None and len(value) > limit:
            raise RowError(name, _too_long(value, limit))


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
        if not _ISO_DATE.match(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise RowError(name, f"{_shown(value)} is not a date (expected YYYY-MM-DD)") from None


def _decimal(row: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    value = _required(row, name) if required else row.get(name, "")
    if not value:
        return None
    # Plain digits only: Decimal() would also take "1e20", "1_000" or non-ASCII digits.
    if not _AMOUNT.match(value):
        if re.match(r"^-?\d+\.\d{5,}$", value):
            raise RowError(name, f"{_shown(value)} has more than 4 decimals")
        raise RowError(name, f"{_shown(value)} is not an amount (digits with '.' as decimal point)")
    return Decimal(value)


def _emails(value: str) -> str | None:
    if not value:
        return None
    addresses = [part.strip() for part in re.split(r"[;,]", value) if part.strip()]
    return "; ".join(map(_address, addresses))


def _address(text: str) -> str:
    """One address as every transport can send it, or a RowError: the domain in ASCII (IDNA
    2008 with UTS #46 mapping, as browsers and mail servers resolve it: `exämple.example` is
    `xn--exmple-cua.example`); a local part (before @) outside ASCII is refused, since only a
    server speaking SMTPUTF8 (RFC 6531) end to end may carry it, and a message that cannot be
    delivered must fail here, with its line, not at delivery every morning."""
    local, _, domain = text.rpartition("@")
    if not _EMAIL.match(text):
        raise RowError("email", f"{_shown(text)} is not an email address")
    if not local.isascii():
        raise RowError("email", f"{_shown(text)}: the part before @ is not ASCII, which needs "
                       "SMTPUTF8 (RFC 6531) all the way to the customer's mailbox; give an "
                       "ASCII address")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise RowError("email", f"{_shown(text)}: the domain is not a valid "
                           f"internationalised domain name ({exc})") from None
    try:
        address = Address(addr_spec=f"{local}@{domain}").addr_spec
    except (ValueError, HeaderParseError, IndexError):
        raise RowError("email", f"{_shown(text)} is not an email address") from None
    if len(address) > EMAIL_ADDRESS_LENGTH:
        raise RowError("email", f"{_shown(text)}: {len(address)} characters once encoded, more "
                       f"than the {EMAIL_ADDRESS_LENGTH} an address may have (RFC 5321)")
    return address


def _customer(row: dict[str, str], default_language: str) -> CustomerRow:
    _within(row, _CUSTOMER_LIMITS)
    external_id = _required(row, "customer_id")
    name = _required(row, "name")
    language = row.get("language", "").lower().replace("-", "_")[:2] or default_language
    if language not in LANGUAGES:
        raise RowError("language",
                       f"{_shown(row['language'])} is not one of {', '.join(LANGUAGES)}")
    country = row.get("country", "").upper() or None
    if country is not None and not _COUNTRY.match(country):
        raise RowError("country", f"{_shown(row['country'])} is not an ISO 3166 alpha-2 code")
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
        # Accounting exports often flatten addresses: " | " separates lines.
        address="\n".join(p.strip() for p in row.get("address", "").split("|") if p.strip())
        or None,
        legal_id=row.get("legal_id") or None,
    )


def _invoice(row: dict[str, str], default_currency: str) -> InvoiceRow:
    _within(row, _INVOICE_LIMITS)
    external_id = _required(row, "invoice_id")
    customer = _required(row, "customer_id")
    due = _date(row, "due_date", required=True)
    issued = _date(row, "issue_date")
    currency = row.get("currency", "").upper() or default_currency
    if not _CURRENCY.match(currency):
        raise RowError("currency", f"{_shown(row['currency'])} is not an ISO 4217 code")
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



class SnapshotBuilder:
    """Collects rows in order (all customers, then all invoices) into a Snapshot.

    With a `sink`, invoices are not kept: each line with an invoice id goes to
    `sink(line, id, invoice or None when rejected, valid)` as it is read (`valid`: read without
    fault and, with `mine`, of one of `mine`'s customers), and duplicated ids are left to the
    sink's owner (the staging table finds them in SQL), so memory does not grow with the
    number of invoices."""

    def __init__(self, customers_name: str, invoices_name: str, *, default_language: str,
                 default_currency: str,
                 sink: Callable[[int, str, InvoiceRow | None, bool], None] | None = None,
                 text_sink: Callable[..., None] | None = None,
                 mine: Callable[[str], bool] | None = None) -> None:
        self.snapshot = Snapshot()
        self.customers_name = customers_name
        self.invoices_name = invoices_name
        self.default_language = default_language
        self.default_currency = default_currency
        self.sink = sink
        self.text_sink = text_sink  # see invoice_cells
        self.mine = mine
        self._customer_lines: dict[str, int] = {}
        self._rejected_customers: dict[str, int] = {}
        self._invoice_lines: dict[str, int] = {}
        self._mine: dict[str, bool] = {}
        # The sum of amount_open over every invoice line whose amount_open reads (rejected
        # lines and other shards' included), in ten-thousandths: the export's control total.
        self.open_total = 0
        self.invoice_rows = 0  # invoice lines read (blank lines are not rows), set by the reader

    @property
    def amount_open_total(self) -> Decimal:
        return Decimal(self.open_total).scaleb(-4)

    def _reject(self, file: str, line: int, field: str, message: str, key: str | None) -> None:
        self.snapshot.rejects.append(Reject(file, line, field, message, key))

    def add_customer(self, line: int, row: dict[str, str]) -> None:
        key = row.get("customer_id") or None
        if key is not None and len(key) > _CUSTOMER_ID_LENGTH:
            # No id can be that long in the ledger: the row is not one of its customers.
            self._reject(self.customers_name, line, "customer_id",
                         _too_long(key, _CUSTOMER_ID_LENGTH), None)
            return
        if key is not None and key in self._customer_lines:
            self._reject(self.customers_name, line, "customer_id",
                         f"duplicate {key!r}, first on line {self._customer_lines[key]}", key)
            return
        try:
            customer = _customer(row, self.default_language)
        except RowError as exc:
            self._reject(self.customers_name, line, exc.field, str(exc), key)
            if key is not None:
                self._rejected_customers[key] = line
            return
        self._customer_lines[customer.external_id] = line
        self.snapshot.customers.append(customer)

    def add_invoice(self, line: int, row: dict[str, str]) -> None:
        key = row.get("invoice_id") or None
        sink = self.sink
        amount_open = row.get("amount_open", "")
        if _AMOUNT.match(amount_open):
            self.open_total += ten_thousandths(amount_open)
        if key is not None and len(key) > _INVOICE_ID_LENGTH:
            # Not staged nor counted as seen: no invoice of the ledger has such an id, so it
            # settles nothing by its absence (and PostgreSQL would refuse it in the staging
            # table's column, aborting the run).
            self._reject(self.invoices_name, line, "invoice_id",
                         _too_long(key, _INVOICE_ID_LENGTH), None)
            return
        if key is not None and sink is None:
            if key in self._invoice_lines:
                self._reject(self.invoices_name, line, "invoice_id",
                             f"duplicate {key!r}, first on line {self._invoice_lines[key]}", key)
                return
            self._invoice_lines[key] = line
            # A rejected row still counts as present: a bad row must never settle an invoice.
            self.snapshot.seen_invoice_ids.add(key)
        try:
            invoice = _invoice(row, self.default_currency)
            customer = invoice.customer_external_id
            if customer not in self._customer_lines:
                if customer in self._rejected_customers:
                    raise RowError("customer_id", f"customer {_shown(customer)} was rejected "
                                   f"({self.customers_name} line "
                                   f"{self._rejected_customers[customer]})")
                raise RowError("customer_id", f"unknown customer {_shown(customer)} "
                               f"(not in {self.customers_name})")
        except RowError as exc:
            self._reject(self.invoices_name, line, exc.field, str(exc), key)
            if sink is not None and key is not None:
                sink(line, key, None, False)
            return
        if sink is None:
            self.snapshot.invoices.append(invoice)
            return
        sink(line, invoice.external_id, invoice, self._holds(customer))

    def _holds(self, customer: str) -> bool:
        """Whether `mine` keeps this customer's invoices (asked once per customer)."""
        if self.mine is None:
            return True
        held = self._mine.get(customer)
        if held is None:
            held = self._mine[customer] = self.mine(customer)
        return held

    def invoice_cells(self, names: list[str]) -> Callable[[int, list[str]], None]:
        """For a streamed file with columns `names`: a function taking one line's (stripped)
        cells. The common case, a good row, is checked and handed to the sink's `add_text`
        without building a dict or objects; anything unusual goes through `add_invoice`, which
        names the fault exactly. Both accept and reject the same rows (tests/test_staging.py)."""
        add_text = self.text_sink
        width = len(names)

        def slow(line: int, cells: list[str]) -> None:
            self.add_invoice(line, dict(zip(names, cells, strict=False)))

        where = {name: names.index(name) for name in set(names)}
        wanted = ("invoice_id", "customer_id", "number", "issue_date", "due_date", "currency",
                  "amount", "amount_open")
        if add_text is None or any(name not in where for name in wanted) or \
                len(where) != len(names):
            return slow
        i_id, i_customer, i_number, i_issued, i_due, i_currency, i_amount, i_open = (
            where[name] for name in wanted)
        known = self._customer_lines
        holds = self._holds
        default_currency = self.default_currency
        id_length, number_length = _INVOICE_ID_LENGTH, _NUMBER_LENGTH
        iso = _ISO_DATE.match
        plain = _AMOUNT.match
        currency_ok = _CURRENCY.match
        fromisoformat = date.fromisoformat
        cents = ten_thousandths

        def fast(line: int, cells: list[str]) -> None:
            if len(cells) < width:
                return slow(line, cells)
            key = cells[i_id]
            customer = cells[i_customer]
            due = cells[i_due]
            issued = cells[i_issued] or None
            amount = cells[i_amount]
            amount_open = cells[i_open]
            currency = cells[i_currency].upper() or default_currency
            # A known customer's id is within its limit; the lengths cost a len() each.
            if not (key and len(key) <= id_length and customer in known
                    and len(cells[i_number]) <= number_length and iso(due) and plain(amount)
                    and plain(amount_open) and currency_ok(currency)
                    and (issued is None or (iso(issued) and issued <= due))):
                return slow(line, cells)
            try:
                fromisoformat(due)
                if issued is not None:
                    fromisoformat(issued)
            except ValueError:
                return slow(line, cells)
            total, left = cents(amount), cents(amount_open)
            if not (0 <= left <= total if total >= 0 else total <= left <= 0):
                return slow(line, cells)
            self.open_total += left
            if holds(customer):
                add_text(line, key, customer, cells[i_number] or None, issued, due, currency,
                         amount, amount_open, total, left)
            else:
                self.sink(line, key, None, False)  # type: ignore[misc]

        return fast

    def customers(self) -> list[CustomerRow]:
        """The customers read (with `mine`, only those it keeps)."""
        if self.mine is None:
            return self.snapshot.customers
        return [row for row in self.snapshot.customers if self._holds(row.external_id)]
