"""A daily run split by customer: shards decide exactly what one run decides, shard runs and
dispatchers running at once never send an action twice, and each shard keeps its own time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_httpserver import HTTPServer
from sqlalchemy import create_engine, event, select, text
from typer.testing import CliRunner
from werkzeug import Request, Response

from dunning import daily, ledger
from dunning.daily import load_context
from dunning.db import get_engine, transaction, upgrade
from dunning.dispatch import _claim, _claimable
from dunning.errors import ConfigError, RunDateError, SnapshotError
from dunning.models import Action
from dunning.policy import Policy
from dunning.shards import Shard, shard_key
from dunning.sources.snapshot import CustomerRow, InvoiceRow, Snapshot
from tests.conftest import Portfolio, base_policy, pg_schema, query
from tests.helpers import DUNNING, day, run

PG_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


# --- shards themselves ------------------------------------------------------------------------


def test_a_shard_is_k_of_n() -> None:
    assert Shard.parse("2/3") == Shard(2, 3) and str(Shard.parse(" 1 / 4 ")) == "1/4"
    for bad in ("0/2", "3/2", "x", "1/0", "1/", "-1/2", "1/2/3"):
        with pytest.raises(ConfigError, match="^shard: "):
            Shard.parse(bad)


@pytest.mark.parametrize("value", ["0/2", "3/2", "x"])
def test_a_bad_shard_is_a_usage_error(value: str) -> None:
    result = CliRunner().invoke(app_for_cli(), ["run", "--shard", value])
    assert result.exit_code == 2
    assert f"--shard: {value!r}" in result.stderr


def app_for_cli() -> Any:
    from dunning.cli import app

    return app


def test_shard_assignment_is_stable_across_processes() -> None:
    """crc32 of the customer id, not Python's salted hash(): every process, machine and day
    puts a customer in the same shard, and the shards of one N cover everyone exactly once."""
    ids = [f"C{n:04d}" for n in range(200)] + ["Zürich-7", "ACME/42"]
    assert shard_key("C1") == zlib.crc32(b"C1") == 3411217923
    mine = {i: [k for k in range(1, 4) if Shard(k, 3).holds(i)] for i in ids}
    assert all(len(shards) == 1 for shards in mine.values())
    assert len({s[0] for s in mine.values()}) == 3, "200 ids spread over the three shards"
    probe = ("import json, sys\nfrom dunning.shards import Shard\n"
             "print(json.dumps({i: [k for k in range(1, 4) if Shard(k, 3).holds(i)] "
             "for i in json.loads(sys.argv[1])}))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", probe, json.dumps(ids)], check=True,
                             capture_output=True, text=True,
                             env=os.environ | {"PYTHONHASHSEED": seed})
        assert json.loads(out.stdout) == mine


def test_time_goes_forward_per_shard(db_url: str) -> None:
    """Shards of one N are disjoint: each keeps its own last date. An unsharded run, or a shard
    of another N, shares customers with every shard, so it must not go back behind them."""
    engine = get_engine(db_url)
    with transaction(engine) as session:
        ledger.start_run(session, "r1", day(7), Shard(1, 2))
        ledger.start_run(session, "r2", day(0), Shard(2, 2))
        ledger.start_run(session, "r3", day(3), Shard(2, 2))  # shard 2 may trail shard 1
    with transaction(engine) as session:
        ledger.check_run_date(session, day(3), Shard(2, 2))
        ledger.check_run_date(session, day(7), Shard(1, 2))
        for shard in (None, Shard(1, 3), Shard(2, 3)):
            with pytest.raises(RunDateError, match="earlier than the last run"):
                ledger.check_run_date(session, day(5), shard)
        with pytest.raises(RunDateError, match="last run of shard 1/2"):
            ledger.check_run_date(session, day(6), Shard(1, 2))
        with pytest.raises(RunDateError):
            ledger.check_run_date(session, day(2), Shard(2, 2))
    assert sorted(query(db_url, "SELECT id, shard FROM run")) == [
        ("r1", "1/2"), ("r2", "2/2"), ("r3", "2/2")]


def _rows(ids_by_shard: dict[int, list[str]]) -> Snapshot:
    customers = [CustomerRow(c, c, f"ap@{c}.example", None, "en", "FR", None, None)
                 for ids in ids_by_shard.values() for c in ids]
    invoices = [InvoiceRow(f"{row.external_id}-{n}", row.external_id, None, None,
                           date(2026, 10, 1), "EUR", Decimal("100.00"), Decimal("100.00"))
                for row in customers for n in range(3)]
    return Snapshot(customers=customers, invoices=invoices,
                    seen_invoice_ids={row.external_id for row in invoices})


def _customers_of(shard: Shard, n: int) -> list[str]:
    found = [f"M{i:04d}" for i in range(1000) if shard.holds(f"M{i:04d}")]
    return found[:n]


def test_settlement_and_its_guard_stay_within_the_shard(db_url: str, tmp_path: Path) -> None:
    """A shard settles only its own customers' missing invoices, and the mass-settlement guard
    counts within the shard: 6 of a shard's 10 customers gone is a cut-short export for that
    shard, though it is only 6 of 20 customers overall."""
    policy = Policy.model_validate(base_policy(tmp_path))
    one, two = Shard(1, 2), Shard(2, 2)
    full = _rows({1: _customers_of(one, 10), 2: _customers_of(two, 10)})
    engine = get_engine(db_url)
    with transaction(engine) as session:
        ledger.reconcile(session, full, day(0), None)
    gone = {row.external_id for row in full.invoices if one.holds(row.customer_external_id)}
    gone = set(sorted(gone)[:18])
    cut = Snapshot(customers=full.customers,
                   invoices=[row for row in full.invoices if row.external_id not in gone],
                   seen_invoice_ids=full.seen_invoice_ids - gone)
    with transaction(engine) as session:
        settled = ledger.reconcile(session, two.split(cut), day(1), None, policy, two).settled
    assert settled == 0, "shard 2 does not settle shard 1's invoices"
    with pytest.raises(SnapshotError, match="settle 18 of the 30 open invoices .* of 6 of the "
                                            "10 customers"):
        with transaction(engine) as session:
            ledger.reconcile(session, one.split(cut), day(1), None, policy, one)
    with transaction(engine) as session:
        assert ledger.reconcile(session, cut, day(1), None, policy).settled == 18


# --- claims -----------------------------------------------------------------------------------


def _queued_pile(db_url: str, customers: int) -> list[int]:
    rows = _rows({1: [f"Q{n:03d}" for n in range(customers)]})
    engine = get_engine(db_url)
    with transaction(engine) as session:
        ledger.reconcile(session, rows, day(0), None)
    ctx = load_context()
    with transaction(engine) as session:
        for low, high in ledger.plan_batches(session, 10**6):
            ledger.evaluate_batch(session, ctx.policy, day(0), None, low, high)
    with transaction(engine) as session:
        return list(session.execute(select(Action.id).where(Action.status == "queued")
                                    .order_by(Action.id)).scalars())


@PG_ONLY
def test_concurrent_claimers_never_claim_the_same_action(
    db_url: str, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUNNING_DATABASE_URL", db_url)
    monkeypatch.setattr("dunning.dispatch.CLAIM_CHUNK", 3)
    pile = _queued_pile(db_url, 60)
    assert len(pile) == 60
    policy = load_context().policy
    claimable = _claimable(policy, "email", day(0))
    start = threading.Barrier(4)
    claimed: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def claimer(n: int) -> None:
        engine = create_engine(db_url)  # its own engine, its own connections
        try:
            start.wait()
            for batch in _claim(engine, claimable, day(0), []):
                claimed[n].extend(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    every = [i for ids in claimed for i in ids]
    assert sorted(every) == pile, "each action claimed once, none left"
    assert query(db_url, "SELECT DISTINCT status, attempts FROM action") == [("sending", 1)]


@PG_ONLY
def test_a_claim_skips_rows_another_dispatcher_holds(
    db_url: str, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SKIP LOCKED: rows another transaction holds are neither waited for nor taken."""
    monkeypatch.setenv("DUNNING_DATABASE_URL", db_url)
    pile = _queued_pile(db_url, 12)
    claimable = _claimable(load_context().policy, "email", day(0))
    impatient = create_engine(db_url)

    @event.listens_for(impatient, "connect")
    def _lock_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("SET lock_timeout = '2s'")  # a wait fails instead of hanging
        dbapi_connection.commit()

    holder = get_engine(db_url).connect()
    try:
        with holder.begin():
            held = list(holder.execute(text(
                "SELECT id FROM action ORDER BY id LIMIT 5 FOR UPDATE")).scalars())
            taken = [i for batch in _claim(impatient, claimable, day(0), pile) for i in batch]
            assert taken == pile[5:] and held == pile[:5]
        # Released: the next claim takes them.
        assert [i for b in _claim(impatient, claimable, day(0), pile) for i in b] == pile[:5]
    finally:
        holder.close()
        impatient.dispose()


# --- shard processes and dispatchers, end to end ----------------------------------------------


@contextmanager
def sendgrid_double() -> Iterator[tuple[HTTPServer, list[dict[str, Any]]]]:
    """A threaded server playing SendGrid, recording every message it is asked to send."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def accept(request: Request) -> Response:
        body = request.get_json()
        with lock:
            seen.append(body["custom_args"])
            number = len(seen)
        return Response("", status=202, headers={"X-Message-Id": f"msg-{number}"})

    server = HTTPServer(threaded=True)
    server.expect_request("/v3/mail/send", method="POST").respond_with_handler(accept)
    server.start()
    try:
        yield server, seen
    finally:
        server.clear()
        server.stop()


def _env(server: HTTPServer) -> dict[str, str]:
    from prefect.settings import get_current_settings

    return os.environ | {"PREFECT_API_URL": str(get_current_settings().api.url),
                         "SENDGRID_API_KEY": "SG.test-key",
                         "SENDGRID_API_HOST": server.url_for("").rstrip("/")}


def _shards_at_once(when: date, count: int, env: dict[str, str]) -> list[dict[str, Any]]:
    """`dunning run --shard K/N` for every K, as N processes started together."""
    processes = [
        subprocess.Popen([DUNNING, "run", "--as-of", when.isoformat(), "--shard",
                          f"{k}/{count}", "--json"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for k in range(1, count + 1)]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def _decisions(db_url: str) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """What was decided, by the accounting system's ids: transitions and actions."""
    transitions = set(query(db_url, """
        SELECT i.external_id, t.event, t.from_stage, t.to_stage, t.business_date, t.reason,
               t.detail
        FROM transition t JOIN invoice i ON i.id = t.invoice_id"""))
    actions = set()
    for customer, kind, stage, status, when, invoices in query(db_url, """
        SELECT c.external_id, a.kind, a.stage, a.status, a.business_date, a.id
        FROM action a JOIN customer c ON c.id = a.customer_id"""):
        listed = tuple(sorted(r[0] for r in query(db_url, """
            SELECT i.external_id || ':' || coalesce(l.dropped_reason, '')
            FROM action_invoice l JOIN invoice i ON i.id = l.invoice_id
            WHERE l.action_id = :a""", a=invoices)))
        actions.add((customer, kind, stage, status, when, listed))
    return transitions, actions


def _book(portfolio: Portfolio) -> None:
    for n in range(1, 41):
        customer = f"K{n:03d}"
        portfolio.customer(customer, email="" if n != 13 else None)  # K013 has no address
        portfolio.invoice(f"{customer}-A", customer, due=day(-4 - n % 9), amount="1200.00")
        if n % 2:
            portfolio.invoice(f"{customer}-B", customer, due=day(3), amount="300.50")
        if n % 3 == 0:
            portfolio.invoice(f"{customer}-C", customer, due=day(-20), amount="980.00",
                              amount_open="480.00")


def _next_week(portfolio: Portfolio) -> None:
    for n in range(1, 41):
        customer = f"K{n:03d}"
        if n % 4 == 0:
            portfolio.pay(f"{customer}-A")
        if n % 6 == 0:
            portfolio.remove(f"{customer}-C")  # settled: absent from the export
        if n % 5 == 0:
            portfolio.invoice(f"{customer}-D", customer, due=day(2), amount="77.77")


@PG_ONLY
@pytest.mark.usefixtures("prefect_server")
def test_two_shard_processes_and_two_dispatchers_send_everything_once(
    portfolio: Portfolio, db_url: str, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    policy["batch_size"] = 7  # several batches, each a range mixing both shards' customers
    policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True), encoding="utf-8")
    _book(portfolio)
    portfolio.write()
    assert {k for k in (1, 2) for c in portfolio.customers if Shard(k, 2).holds(c)} == {1, 2}

    with sendgrid_double() as (server, seen):
        env = _env(server)
        # Two mornings, each as two shard processes at once.
        first = _shards_at_once(day(0), 2, env)
        assert [r["shard"] for r in first] == ["1/2", "2/2"]
        assert sum(r["snapshot"]["customers"] for r in first) == 40
        _next_week(portfolio)
        portfolio.write()
        second = _shards_at_once(day(7), 2, env)
        assert sum(r["reconcile"]["settled"] for r in second) == 10 + 6
        sent = sum(r["dispatch"]["sent"] for r in first + second)
        assert sent > 40
        # Every action went out once, by the shard of its customer.
        keys = Counter(args["dunning_action_key"] for args in seen)
        assert len(seen) == sent and set(keys.values()) == {1}
        assert keys.keys() == {k for (k,) in query(
            db_url, "SELECT dedupe_key FROM action WHERE status = 'sent'")}
        for customer, stored, shard in query(db_url, """
                SELECT c.external_id, c.shard_key, r.shard FROM action a
                JOIN customer c ON c.id = a.customer_id JOIN run r ON r.id = a.run_id"""):
            assert stored == shard_key(customer) and Shard.parse(shard).holds(customer)

        # Both shards together decided exactly what one run decides on the same export.
        sharded = _decisions(db_url)
        with _another_database() as other:
            monkeypatch.setenv("DUNNING_DATABASE_URL", other)
            monkeypatch.setenv("DUNNING_OUTBOX_DIR", str(portfolio.folder / "outbox-one-run"))
            reference = Portfolio(portfolio.folder)
            _book(reference)
            reference.write()
            run(day(0))
            _next_week(reference)
            reference.write()
            run(day(7))
            assert _decisions(other) == sharded
        monkeypatch.setenv("DUNNING_DATABASE_URL", db_url)
        assert len(sharded[0]) > 60 and len(sharded[1]) > 40

        # A same-day rerun of a shard changes nothing and sends nothing.
        again = _shards_at_once(day(7), 2, env)
        assert [r["evaluation"]["transitions"] + r["dispatch"]["sent"] for r in again] == [0, 0]
        assert _decisions(db_url) == sharded and len(seen) == sent

        # A pile of queued messages, and two dispatchers at once, claiming 5 at a time.
        for n in range(1, 81):
            portfolio.customer(f"P{n:03d}")
            portfolio.invoice(f"P{n:03d}-A", f"P{n:03d}", due=day(9), amount="450.00")
        portfolio.write()
        ctx = load_context()
        daily.reconcile(ctx, daily.pull_snapshot(ctx), day(14), "pile")
        for low, high in daily.plan(ctx):
            daily.evaluate(ctx, day(14), "pile", low, high)
        pile = {key for (key,) in query(
            db_url, "SELECT dedupe_key FROM action WHERE status = 'queued' AND kind = 'email'")}
        assert len(pile) >= 80
        before = len(seen)
        script = ("import json, sys\nfrom datetime import date\nimport dunning.dispatch\n"
                  "dunning.dispatch.CLAIM_CHUNK = 5\nfrom dunning.daily import dispatch, "
                  "load_context\nresult = dispatch(load_context(), date.fromisoformat(sys.argv[1]))"
                  "\nprint(json.dumps(result.as_dict()))")
        dispatchers = [subprocess.Popen([sys.executable, "-c", script, day(14).isoformat()],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for _ in range(2)]
        results = []
        for process in dispatchers:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
            results.append(json.loads(out))
        assert sum(r["sent"] + r["failed"] for r in results) == len(pile)
        keys = Counter(args["dunning_action_key"] for args in seen)
        assert set(keys.values()) == {1}
        assert len(seen) - before == sum(r["sent"] for r in results)
        outcome = {key: (status, attempts) for key, status, attempts in query(
            db_url, "SELECT dedupe_key, status, attempts FROM action WHERE kind = 'email'")}
        assert {outcome[key] for key in pile} <= {("sent", 1), ("failed", 1)}
        assert {key for key in pile if outcome[key][0] == "sent"} == keys.keys() & pile


@contextmanager
def _another_database() -> Iterator[str]:
    with pg_schema() as url:
        yield url


# --- the parent flow --------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_server")
def test_the_parent_flow_runs_the_shards_as_subflows(
    portfolio: Portfolio, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.sharded import sharded_dunning

    _book(portfolio)
    portfolio.write()
    summary = sharded_dunning(as_of=day(0), shards=3)
    assert summary["failed"] == [] and sorted(summary["shards"]) == ["1/3", "2/3", "3/3"]
    assert sorted((shard, str(when)) for shard, when in query(
        db_url, "SELECT shard, business_date FROM run")) == [(f"{k}/3", str(day(0)))
                                                              for k in (1, 2, 3)]
    sharded = _decisions(db_url)
    assert summary["totals"]["transitions"] == len(sharded[0])

    if db_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'one-run.db'}"
        upgrade(other)
        monkeypatch.setenv("DUNNING_DATABASE_URL", other)
        report = run(day(0))
        assert _decisions(other) == sharded
    else:
        with _another_database() as other:
            monkeypatch.setenv("DUNNING_DATABASE_URL", other)
            report = run(day(0))
            assert _decisions(other) == sharded
    assert report["evaluation"]["entered"] == summary["totals"]["entered"]
    assert report["dispatch"]["sent"] == summary["totals"]["sent"]


async def _deployment_id(name: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            return (await client.read_deployment_by_name(name)).id
        except ObjectNotFound:
            return None


@PG_ONLY
@pytest.mark.usefixtures("prefect_server")
def test_the_parent_flow_starts_deployment_runs(portfolio: Portfolio, db_url: str) -> None:
    """With a deployment, each shard is a run of it, executed by whoever serves the deployment
    (here a `serve` process; in production, the workers of its pool)."""
    import asyncio
    import time

    from prefect.settings import get_current_settings

    from flows.sharded import sharded_dunning

    _book(portfolio)
    portfolio.write()
    env = os.environ | {"PREFECT_API_URL": str(get_current_settings().api.url),
                        "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    serve = ("from flows.daily import daily_dunning\n"
             "daily_dunning.serve(name='shard-test', limit=2)")
    server = subprocess.Popen([sys.executable, "-c", serve], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while asyncio.run(_deployment_id("daily-dunning/shard-test")) is None:
            assert server.poll() is None, server.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the deployment was not served"
            time.sleep(1)
        summary = sharded_dunning(as_of=day(0), shards=2, deployment="daily-dunning/shard-test")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert summary["failed"] == []
    assert {name: o["state"] for name, o in summary["shards"].items()} == {
        "1/2": "COMPLETED", "2/2": "COMPLETED"}
    # The shard runs recorded in the ledger are those flow runs.
    assert sorted(query(db_url, "SELECT id, shard FROM run")) == sorted(
        (o["flow_run_id"], name) for name, o in summary["shards"].items())
    assert query(db_url, "SELECT count(*) FROM transition")[0][0] > 40
