"""One run at a time per shard: the run lock, and who holds it.

A real run (`dunning run`, or the daily flow started by a deployment) of shard "K/N", or of the
whole book, takes that shard's run lock first and holds it to the end of the flow; then it
records itself as `running` in a transaction of its own (`ledger.start_run`), so that a second
run of the same shard is refused at once, naming the first one. The lock dies with its holder:

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a connection of its
  own. The server releases it when that session ends, whichever way the process ends.
- SQLite: `flock` on a file beside the database (`dunning.db.run.lock`, or
  `dunning.db.run-1of4.lock` for shard 1/4). The kernel releases it when the process dies. The
  file stays; only the lock on it means something.

So a run killed with `kill -9` never blocks the next one, and the next one, holding the lock,
knows that a `running` row of its shard is a run that died (`ledger.mark_crashed`). Only runs
of the very same shard exclude each other: shards of different N, or a shard and an unsharded
run, overlap but may run together (claims and row locks keep them apart, see the README).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from dunning.errors import ConfigError, RunInProgress
from dunning.shards import Shard
from dunning.statuses import RunStatus

_NAMESPACE = 0x64756E72  # "dunr": the first key of every run lock (two-key advisory locks)
# Without these, PostgreSQL notices a holder whose machine vanished (power cut, network gone)
# only after the system's TCP keepalive, two hours by default; with them, within two minutes.
_KEEPALIVES = {"tcp_keepalives_idle": 60, "tcp_keepalives_interval": 10,
               "tcp_keepalives_count": 6}


def _label(shard: Shard | None) -> str:
    return "all" if shard is None else f"{shard.index}of{shard.count}"


def lock_file(database: str, shard: Shard | None) -> Path:
    """The SQLite lock file of a shard's runs, beside the database file."""
    return Path(f"{database}.run.lock" if shard is None else f"{database}.run-{_label(shard)}.lock")


@contextmanager
def held(engine: Engine, shard: Shard | None) -> Iterator[None]:
    """Hold the run lock of `shard` (None: the whole book) for the block; `RunInProgress`,
    naming the run that holds it, if another run does."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, shard):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # a database in memory belongs to one process: nobody to exclude
        return
    with _flock(engine, lock_file(database, shard), shard):
        yield


def check_free(engine: Engine, shard: Shard | None) -> None:
    """Refuse at once when a run of `shard` is in progress (the lock is taken and let go)."""
    with held(engine, shard):
        pass


@contextmanager
def _advisory(engine: Engine, shard: Shard | None) -> Iterator[None]:
    # AUTOCOMMIT: an idle transaction held for the whole run would pin old row versions
    # (vacuum) and fall to idle_in_transaction_session_timeout.
    try:
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except OperationalError as exc:
        raise ConfigError(f"DUNNING_DATABASE_URL: cannot open the database: {exc.orig}") \
            from None
    try:
        # Advisory locks are per database, not per schema: two ledgers in two schemas of one
        # database (the test suite has many) must not share their locks.
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        key = zlib.crc32(f"{schema}/{_label(shard)}".encode())
        key = key - 2**32 if key >= 2**31 else key  # the second key is a signed int4
        taken = connection.execute(
            text("SELECT pg_try_advisory_lock(CAST(:ns AS integer), CAST(:key AS integer))"),
            {"ns": _NAMESPACE, "key": key}).scalar_one()
        if not taken:
            raise _in_progress(engine, shard)
        for name, value in _KEEPALIVES.items():
            connection.execute(text(f"SET {name} = {value}"))
        yield
    finally:
        # Closing the session is what lets the lock go: the connection must not go back to the
        # pool still holding it.
        connection.invalidate()
        connection.close()


@contextmanager
def _flock(engine: Engine, path: Path, shard: Shard | None) -> Iterator[None]:
    import fcntl

    # flock, not fcntl's record locks: those belong to the process, so a second run in the same
    # process (shards as subflows on threads) would not be excluded, and closing any other
    # descriptor of the file would let them go.
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the run lock file beside the database: "
                          f"{exc.strerror}. Nothing was changed.") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_progress(engine, shard) from None
        yield
    finally:
        os.close(descriptor)  # lets the lock go


def _in_progress(engine: Engine, shard: Shard | None) -> RunInProgress:
    which = "of the whole book" if shard is None else f"of shard {shard}"
    holder = _holder(engine, shard)
    if holder is None:
        running = f"another run {which} is in progress (it has not recorded itself yet)"
    else:
        run_id, business_date, started_at = holder
        running = (f"run {run_id} {which}, for business date {business_date}, is in progress "
                   f"(started {_utc(started_at)})")
    return RunInProgress(f"{running}; one run of a shard at a time: wait for it to finish, "
                         "then run again if needed. Nothing was changed.")


def _holder(engine: Engine, shard: Shard | None) -> tuple[str, str, object] | None:
    """The latest `running` row of the shard: the holder's, once it has recorded itself (in
    the milliseconds before, a row left by a run that crashed earlier could be named)."""
    # A plain read on a raw connection: on SQLite, a session would BEGIN IMMEDIATE and wait for
    # the holder's write transaction (a reconcile can take minutes) instead of answering now.
    try:
        connection = engine.raw_connection()
    except DBAPIError:
        return None
    try:
        cursor = connection.cursor()
        shard_test = "shard IS NULL" if shard is None else "shard = ?"
        if engine.dialect.name == "postgresql":
            shard_test = shard_test.replace("?", "%s")
        cursor.execute(
            f"SELECT id, business_date, started_at FROM run WHERE status = '{RunStatus.RUNNING}' "
            f"AND {shard_test} ORDER BY started_at DESC LIMIT 1",
            () if shard is None else (str(shard),))
        row = cursor.fetchone()
    except Exception:  # e.g. an older schema: the refusal still stands, unnamed
        return None
    finally:
        connection.close()
    return None if row is None else (str(row[0]), str(row[1]), row[2])


def _utc(value: object) -> str:
    """A stored timestamp as "2026-12-01 14:25:03 UTC" (SQLite returns the stored text)."""
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(moment, datetime):
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
