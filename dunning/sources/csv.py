"""The CSV snapshot: customers.csv and invoices.csv, UTF-8 with a header row."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dunning.errors import SnapshotError
from dunning.sources.rows import CUSTOMER_REQUIRED, INVOICE_REQUIRED, SnapshotBuilder
from dunning.sources.snapshot import InvoiceRow, Snapshot


def _records(path: Path, required: tuple[str, ...], cells: bool = False
             ) -> Iterator[tuple[int, Any]]:
    """Yield (line number, row) with stripped values, the row as a dict (`cells`: as the list
    of cells, after a first item that is the list of column names); refuse a missing file or
    header first."""
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
        if cells:
            yield 1, names
        line = reader.line_num + 1
        strip = str.strip
        try:
            for row in reader:
                start, line = line, reader.line_num + 1
                values = list(map(strip, row))
                if not any(values):
                    continue
                # Missing trailing cells are absent keys (read as ""); extra cells are ignored.
                yield start, (values if cells else dict(zip(names, values, strict=False)))
        except UnicodeDecodeError as exc:
            raise SnapshotError(
                f"{path}: not valid UTF-8 near byte {exc.start}; nothing was changed"
            ) from None
        except csv.Error as exc:
            raise SnapshotError(f"{path}: line {reader.line_num}: {exc}; nothing was changed") \
                from None


def read_csv_snapshot(
    customers_path: Path,
    invoices_path: Path,
    *,
    default_language: str = "fr",
    default_currency: str = "EUR",
) -> Snapshot:
    """Read both files; bad rows become rejects naming file, line and field."""
    # Open both before reading anything: a missing file is refused as a whole.
    customer_records = _records(customers_path, CUSTOMER_REQUIRED)
    invoice_records = _records(invoices_path, INVOICE_REQUIRED)
    first_customers = next(customer_records, None)
    first_invoices = next(invoice_records, None)
    builder = SnapshotBuilder(customers_path.name, invoices_path.name,
                              default_language=default_language,
                              default_currency=default_currency)
    for line, row in _chain(first_customers, customer_records):
        builder.add_customer(line, row)
    for line, row in _chain(first_invoices, invoice_records):
        builder.add_invoice(line, row)
    return builder.snapshot


def stream_csv_snapshot(
    customers_path: Path,
    invoices_path: Path,
    sink: Callable[[int, str, InvoiceRow | None, bool], None],
    *,
    text_sink: Callable[..., None] | None = None,
    default_language: str = "fr",
    default_currency: str = "EUR",
    mine: Callable[[str], bool] | None = None,
) -> SnapshotBuilder:
    """Read both files, handing each invoice line with an id to `sink` as it is read (see
    `SnapshotBuilder`); returns the builder, which holds the customers and the rejects."""
    customer_records = _records(customers_path, CUSTOMER_REQUIRED)
    invoice_records = _records(invoices_path, INVOICE_REQUIRED, cells=True)
    first_customers = next(customer_records, None)
    _, names = next(invoice_records)
    first_invoices = next(invoice_records, None)
    builder = SnapshotBuilder(customers_path.name, invoices_path.name,
                              default_language=default_language,
                              default_currency=default_currency, sink=sink,
                              text_sink=text_sink, mine=mine)
    for line, row in _chain(first_customers, customer_records):
        builder.add_customer(line, row)
    add = builder.invoice_cells(names)
    for line, cells in _chain(first_invoices, invoice_records):
        add(line, cells)
    return builder


def _chain(
    first: tuple[int, dict[str, str]] | None, rest: Iterator[tuple[int, dict[str, str]]]
) -> Iterator[tuple[int, dict[str, str]]]:
    if first is not None:
        yield first
        yield from rest
