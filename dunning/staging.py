"""The snapshot's invoices staged in a table of their own, so that a million rows are never held
in memory: the source streams its rows in, reconcile compares them with the ledger in SQL, and
the table is dropped once the run has used it.

Each staged row is one line of the export with an invoice id: `valid` rows (read without fault
and, for a shard, of the shard's customers) are the invoices reconcile brings into the ledger;
the others are kept only as "seen" (a rejected row, or another shard's invoice, must never
settle an invoice). Duplicated ids are found in SQL once the rows are in: the first line wins.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    func,
    inspect,
    select,
    text,
)

from dunning.coltypes import Money
from dunning.shards import Shard
from dunning.sources.snapshot import CustomerRow, InvoiceRow, Reject, Snapshot

PREFIX = "staged_invoice_"
_CHUNK = 20_000
_STALE = timedelta(days=1)
_COLUMNS = ("line", "external_id", "customer_external_id", "number", "issue_date", "due_date",
            "currency", "amount", "amount_open", "valid")


def staged_table(name: str) -> Table:
    """The staging table's shape (the ledger's own types: Money, Date)."""
    return Table(
        name, MetaData(),
        Column("line", Integer, nullable=False),
        Column("external_id", String(100), nullable=False),
        Column("customer_external_id", String(100)),
        Column("number", String),
        Column("issue_date", Date),
        Column("due_date", Date),
        Column("currency", String(3)),
        Column("amount", Money()),
        Column("amount_open", Money()),
        Column("valid", Boolean, nullable=False),
    )


@dataclass
class Staged:
    """A snapshot whose invoices wait in `table`; customers and rejected rows are few enough to
    stay in memory."""

    table: str
    customers: list[CustomerRow] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    invoices: int = 0  # valid rows: the invoices the run reconciles
    seen: int = 0  # every invoice id of the export, rejected rows and other shards included


def new_name(shard: Shard | None) -> str:
    """`staged_invoice_<shard>_<UTC time>_<random>`: the time lets a later pull of the same
    shard drop what a crashed run left behind."""
    part = "all" if shard is None else f"{shard.index}of{shard.count}"
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{PREFIX}{part}_{stamp}_{uuid.uuid4().hex[:8]}"


def drop_leftovers(engine: Engine, shard: Shard | None) -> list[str]:
    """Drop the staging tables of the same shard older than a day (a run that died between
    pull and reconcile); a run still using its table is never that old."""
    part = "all" if shard is None else f"{shard.index}of{shard.count}"
    cutoff = (datetime.now(UTC) - _STALE).strftime("%Y%m%d%H%M%S")
    dropped = []
    for name in inspect(engine).get_table_names():
        if not name.startswith(f"{PREFIX}{part}_"):
            continue
        stamp = name[len(PREFIX) + len(part) + 1:].split("_", 1)[0]
        if stamp < cutoff:
            drop(engine, name)
            dropped.append(name)
    return dropped


def create(connection: Connection, name: str) -> Table:
    table = staged_table(name)
    if connection.dialect.name == "postgresql":
        # Unlogged: a scratch table needs no write-ahead log; it is rebuilt by the next pull.
        table._prefixes = ["UNLOGGED"]
    table.create(connection)
    return table


def drop(engine_or_connection: Engine | Connection, name: str) -> None:
    if isinstance(engine_or_connection, Engine):
        with engine_or_connection.begin() as connection:
            connection.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
    else:
        engine_or_connection.execute(text(f'DROP TABLE IF EXISTS "{name}"'))


def _cents(value: Decimal) -> int:
    """As `Money` stores it on SQLite; snapshot amounts have at most 4 decimals (exact)."""
    return int(value.scaleb(4))


class Loader:
    """Writes staged rows in chunks through the driver itself (no ORM, no per-row SQLAlchemy
    processing): `executemany` on SQLite, `COPY` on PostgreSQL. Values are converted as the
    ledger's column types store them (SQLite: ISO dates, amounts in ten-thousandths)."""

    def __init__(self, connection: Connection, table: Table, chunk: int = _CHUNK,
                 commits: bool = True) -> None:
        self.connection = connection
        self.commits = commits
        self.table = table
        self.sqlite = connection.dialect.name == "sqlite"
        self.chunk = chunk
        self.rows: list[tuple[Any, ...]] = []
        self.count = 0
        self.valid = 0
        columns = ", ".join(_COLUMNS)
        if self.sqlite:
            marks = ", ".join("?" * len(_COLUMNS))
            self._sql = f'INSERT INTO "{table.name}" ({columns}) VALUES ({marks})'
        else:
            self._sql = f'COPY "{table.name}" ({columns}) FROM STDIN'

    def add(self, line: int, key: str, invoice: InvoiceRow | None, valid: bool) -> None:
        if invoice is None or not valid:
            self.rows.append((line, key, None, None, None, None, None, None, None, False))
        elif self.sqlite:
            issued = invoice.issue_date
            self.rows.append((line, key, invoice.customer_external_id, invoice.number,
                              None if issued is None else issued.isoformat(),
                              invoice.due_date.isoformat(), invoice.currency,
                              _cents(invoice.amount), _cents(invoice.amount_open), True))
            self.valid += 1
        else:
            self.rows.append((line, key, invoice.customer_external_id, invoice.number,
                              invoice.issue_date, invoice.due_date, invoice.currency,
                              invoice.amount, invoice.amount_open, True))
            self.valid += 1
        if len(self.rows) >= self.chunk:
            self.flush()

    def add_text(self, line: int, key: str, customer: str, number: str | None,
                 issued: str | None, due: str, currency: str, amount: str, amount_open: str,
                 amount_cents: int, open_cents: int) -> None:
        """A valid row as checked text (ISO dates, plain amounts), with the amounts in
        ten-thousandths: what SQLite stores, while COPY takes the text itself."""
        if self.sqlite:
            self.rows.append((line, key, customer, number, issued, due, currency, amount_cents,
                              open_cents, True))
        else:
            self.rows.append((line, key, customer, number, issued, due, currency, amount,
                              amount_open, True))
        self.valid += 1
        if len(self.rows) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows, each chunk in a transaction of its own (the write lock is
        not held while the source is read)."""
        if not self.rows:
            return
        if not self.connection.in_transaction():
            self.connection.begin()
        raw = self.connection.connection.driver_connection
        if self.sqlite:
            if not isinstance(raw, sqlite3.Connection):
                raise TypeError(f"staging on SQLite needs the sqlite3 driver, not {raw!r}")
            raw.executemany(self._sql, self.rows)
        else:
            import psycopg  # imported by SQLAlchemy's PostgreSQL dialect anyway

            if not isinstance(raw, psycopg.Connection):
                raise TypeError(f"staging on PostgreSQL needs the psycopg driver, not {raw!r}")
            with raw.cursor() as cursor, cursor.copy(self._sql) as copy:
                for row in self.rows:
                    copy.write_row(row)
        self.count += len(self.rows)
        self.rows = []
        if self.commits:
            self.connection.commit()


def finish(connection: Connection, table: Table, invoices_name: str,
           rejects: list[Reject]) -> tuple[list[Reject], int, int]:
    """Index the loaded rows, reject every line whose invoice id came earlier (the first line
    wins, whatever its fate), and count. Returns (rejects, valid invoices, ids seen)."""
    connection.execute(text(
        f'CREATE INDEX "ix_{table.name}" ON "{table.name}" (external_id, line)'))
    doubled = select(table.c.external_id).group_by(table.c.external_id) \
        .having(func.count() > 1).subquery()
    first: dict[str, int] = {}
    duplicates: list[Reject] = []
    for key, line in connection.execute(
            select(table.c.external_id, table.c.line)
            .where(table.c.external_id.in_(select(doubled.c.external_id)))
            .order_by(table.c.external_id, table.c.line)):
        if key not in first:
            first[key] = line
            continue
        duplicates.append(Reject(invoices_name, line, "invoice_id",
                                 f"duplicate {key!r}, first on line {first[key]}", key))
    if duplicates:
        lines = [reject.line for reject in duplicates]
        for start in range(0, len(lines), 1000):
            connection.execute(table.delete().where(table.c.line.in_(lines[start:start + 1000])))
        # A duplicated line is reported as a duplicate, whatever else was wrong with it.
        gone = set(lines)
        rejects = [r for r in rejects if not (r.file == invoices_name and r.line in gone)]
        rejects = _in_order(rejects + duplicates, invoices_name)
    valid, seen = connection.execute(
        select(func.count().filter(table.c.valid), func.count()).select_from(table)).one()
    return rejects, int(valid or 0), int(seen or 0)


def _in_order(rejects: list[Reject], invoices_name: str) -> list[Reject]:
    """Customers' rejects first, then the invoices' by line (the order of the files)."""
    others = [r for r in rejects if r.file != invoices_name]
    return others + sorted((r for r in rejects if r.file == invoices_name), key=lambda r: r.line)


def load_snapshot(loader: Loader, snapshot: Snapshot) -> None:
    """Load an in-memory snapshot's invoices (its valid ones) and the other ids it saw."""
    valid_ids = set()
    for line, invoice in enumerate(snapshot.invoices, start=1):
        valid_ids.add(invoice.external_id)
        loader.add(line, invoice.external_id, invoice, True)
    extra = sorted(snapshot.seen_invoice_ids - valid_ids)
    for line, key in enumerate(extra, start=len(snapshot.invoices) + 1):
        loader.add(line, key, None, False)
    loader.flush()


def stage_snapshot(connection: Connection, snapshot: Snapshot, shard: Shard | None = None,
                   name: str | None = None) -> Staged:
    """Stage an in-memory snapshot (already split for `shard`) on `connection`, in the caller's
    transaction."""
    name = name or new_name(shard)
    table = create(connection, name)
    load_snapshot(Loader(connection, table, commits=False), snapshot)
    rejects, valid, seen = finish(connection, table, "", list(snapshot.rejects))
    return Staged(table=name, customers=list(snapshot.customers), rejects=rejects,
                  invoices=valid, seen=seen)


def stage_stream(engine: Engine, shard: Shard | None,
                 read: Callable[[Loader], tuple[list[CustomerRow], list[Reject], str]]) -> Staged:
    """Create a staging table and let `read` stream the source's invoice rows into it (the
    loader commits chunk by chunk); `read` returns the customers, the rejects and the invoices'
    file name. A source that fails half-way leaves no table behind."""
    name = new_name(shard)
    with engine.connect() as connection:
        with connection.begin():
            table = create(connection, name)
        try:
            loader = Loader(connection, table)
            customers, rejects, invoices_name = read(loader)
            loader.flush()
            with _transaction(connection):
                rejects, valid, seen = finish(connection, table, invoices_name, rejects)
        except BaseException:
            if connection.in_transaction():
                connection.rollback()
            drop(connection, name)
            connection.commit()
            raise
    return Staged(table=name, customers=customers, rejects=rejects, invoices=valid, seen=seen)


@contextmanager
def _transaction(connection: Connection) -> Iterator[None]:
    if not connection.in_transaction():
        connection.begin()
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
