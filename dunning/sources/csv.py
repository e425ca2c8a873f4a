"""The CSV snapshot: customers.csv and invoices.csv, UTF-8 with a header row."""

from __future__ import annotations

import csv
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from dunning.errors import SnapshotError
from dunning.sources.rows import CUSTOMER_REQUIRED, INVOICE_REQUIRED, SnapshotBuilder
from dunning.sources.snapshot import InvoiceRow, Snapshot

Row = TypeVar("Row")
Records = Generator[tuple[int, Row], None, None]


@overload
def _records(path: Path, required: tuple[str, ...], cells: Literal[False] = False
             ) -> Records[dict[str, str]]: ...
@overload
def _records(path: Path, required: tuple[str, ...], cells: Literal[True]
             ) -> Records[list[str]]: ...
def _records(path: Path, required: tuple[str, ...], cells: bool = False
             ) -> Records[Any]:
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
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise SnapshotError(f"{path}: line 1: unreadable header: {exc}") from None
        names = column_names(path, header, required)
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
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise SnapshotError(f"{path}: line {reader.line_num}: {exc}; nothing was changed") \
                from None


def column_names(path: Path, header: list[str] | None, required: tuple[str, ...]) -> list[str]:
    """The header's column names as the rows are read (stripped, lower case); refuse a missing
    header, a missing required column, and two columns that would be read as the same one (the
    second would silently win: a stray `amount_open` of zeros settles every invoice)."""
    if not header or not any(cell.strip() for cell in header):
        raise SnapshotError(f"{path}: no header row; nothing was changed")
    names = [cell.strip().lower() for cell in header]
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        if not name:
            continue  # unnamed columns are ignored, like any extra column
        if name in first:
            raise SnapshotError(
                f"{path}: line 1: columns {first[name] + 1} ({header[first[name]]!r}) and "
                f"{index + 1} ({header[index]!r}) are both read as {name!r}; the export must "
                "have each column once. Nothing was changed.")
        first[name] = index
    missing = [name for name in required if name not in first]
    if missing:
        raise SnapshotError(
            f"{path}: line 1: header lacks required column(s) {', '.join(missing)}; "
            "nothing was changed"
        )
    return names


def _not_utf8(path: Path) -> SnapshotError:
    """The error for a file that is not UTF-8, naming the line of the first bad byte (the text
    reader decodes ahead by blocks, so its own position says nothing about the line)."""
    found = find_bad_utf8(path)
    if found is None:  # the file changed under us
        return SnapshotError(f"{path}: not valid UTF-8; export the file as UTF-8. "
                             "Nothing was changed.")
    line, byte = found
    return SnapshotError(f"{path}: line {line}: not valid UTF-8 (byte 0x{byte:02x}); export the "
                         "file as UTF-8. Nothing was changed.")


_SCAN = 1 << 20


def find_bad_utf8(path: Path, block_size: int = _SCAN) -> tuple[int, int] | None:
    """The line number and value of the first byte of `path` that is not UTF-8, or None.
    Reads by blocks of a megabyte, decoding and counting newlines in C (100 MB in about 0.1 s);
    a character cut by a block's end is carried over to the next block."""
    line = 1
    carry = b""
    with path.open("rb") as handle:
        while True:
            block = handle.read(block_size)
            data = carry + block
            if not data:
                return None
            try:
                data.decode("utf-8")
                good = len(data)
            except UnicodeDecodeError as exc:
                cut = block and exc.end == len(data) and exc.reason == "unexpected end of data"
                if not cut:
                    return line + data.count(b"\n", 0, exc.start), data[exc.start]
                good = exc.start
            line += data.count(b"\n", 0, good)
            carry = data[good:]
            if not block:
                return None


def read_csv_snapshot(
    customers_path: Path,
    invoices_path: Path,
    *,
    default_language: str = "fr",
    default_currency: str = "EUR",
) -> Snapshot:
    """Read both files; bad rows become rejects naming file, line and field."""
    return read_csv_builder(customers_path, invoices_path, default_language=default_language,
                            default_currency=default_currency).snapshot


def read_csv_builder(
    customers_path: Path,
    invoices_path: Path,
    *,
    default_language: str = "fr",
    default_currency: str = "EUR",
) -> SnapshotBuilder:
    """`read_csv_snapshot`, returning the builder (its snapshot and the export's figures)."""
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
    rows = 0
    for line, row in _chain(first_invoices, invoice_records):
        builder.add_invoice(line, row)
        rows += 1
    builder.invoice_rows = rows
    return builder


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
    rows = 0  # the control figures' row count
    for line, cells in _chain(first_invoices, invoice_records):
        add(line, cells)
        rows += 1
    builder.invoice_rows = rows
    return builder


def check_file(path: Path, required: tuple[str, ...]) -> None:
    """What `dunning run` checks before starting: the file opens, its header is sound, and
    every byte of it is UTF-8."""
    records = _records(path, required, cells=True)
    next(records)
    records.close()
    if find_bad_utf8(path) is not None:
        raise _not_utf8(path)


def _chain(first: tuple[int, Row] | None, rest: Iterator[tuple[int, Row]]
           ) -> Iterator[tuple[int, Row]]:
    if first is not None:
        yield first
        yield from rest
