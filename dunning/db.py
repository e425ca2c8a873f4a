"""Engines, sessions and schema migrations (Alembic)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session, SQLModel

from dunning.errors import ConfigError
from dunning.resources import resource_dir

_engines: dict[str, Engine] = {}
_CHUNK = 2000
T = TypeVar("T")
_MIGRATION_LOCK = 0x64756E6E  # "dunn": the advisory lock that serialises schema upgrades


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite would only BEGIN before the first write, leaving a batch's reads outside its
    # transaction; we begin ourselves (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets `dunning status` read while a run writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # 64 MB of page cache (the default is 2 MB): at a million invoices, index inserts into the
    # transition and action_invoice trees otherwise re-read their pages at every row.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE: a transaction holds the write lock from its first read, so a dispute or a hold
    # committed while a batch is deciding waits for the batch, then takes its invoices out.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine(url: str) -> Engine:
    """One engine per URL for the process."""
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = _create(url, _sqlite_begin)
    return engine


def _create(url: str, begin: Any, *listeners: Any) -> Engine:
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"DUNNING_DATABASE_URL: cannot use {url!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        for listener in (_sqlite_pragmas, *listeners):
            event.listen(engine, "connect", listener)
        event.listen(engine, "begin", begin)
    return engine


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_begin_deferred(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")  # a read snapshot (WAL): never waits for a writer


def get_reader(url: str) -> Engine:
    """An engine that only reads, one per URL for the process. On SQLite its transactions
    begin DEFERRED (a snapshot that a writer's lock does not hold back, where `get_engine`'s
    take the write lock at once) and refuse writes: the dispatcher's workers read the messages
    of the actions it claimed while the run evaluates the next batch of customers."""
    key = f"reader:{url}"
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = _create(url, _sqlite_begin_deferred, _sqlite_read_only)
    return engine


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        with session.begin():
            yield session


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    config.attributes["url"] = url
    return config


def upgrade(url: str) -> str | None:
    """Create or migrate the schema to the newest revision; returns that revision."""
    from alembic import command

    engine = get_engine(url)
    config = _alembic_config(url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                # Shard runs starting together on several machines would otherwise race to
                # apply the same migration; the lock makes the others wait and find it done.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        raise ConfigError(f"DUNNING_DATABASE_URL: cannot open the database: {exc.orig}") from None
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    if not inspect(engine).has_table("alembic_version"):
        return None
    with engine.connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def require_schema(url: str) -> Engine:
    """The engine, once the schema is known to exist (without importing Alembic)."""
    engine = get_engine(url)
    try:
        ready = inspect(engine).has_table("run")
    except OperationalError as exc:
        raise ConfigError(f"DUNNING_DATABASE_URL: cannot open the database: {exc.orig}") from None
    if not ready:
        raise ConfigError(
            f"the database {engine.url.render_as_string(hide_password=True)} has no dunning "
            "tables: run `dunning db upgrade` first"
        )
    return engine


def chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    """`items` in slices of `size`: ids for an IN (...) or rows for one executemany."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def saved_id(row_id: int | None) -> int:
    """A primary key read back from the database, which is never NULL, though the models type
    it optional (a row not inserted yet has none)."""
    if row_id is None:
        raise ValueError("a primary key read back from the database is NULL")
    return row_id


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a table model (for Core statements: executemany, INSERT ... SELECT).
    SQLModel sets `__table__` on a table model but does not declare it to type checkers."""
    table = getattr(model, "__table__", None)
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return table
