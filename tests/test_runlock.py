"""One run of a shard at a time: a second run is refused at once and names the first; a run
killed with `kill -9` blocks nobody, and the next run marks it crashed and says so."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from dunning import daily, runlock
from dunning.db import get_engine, transaction
from dunning.errors import RunInProgress
from dunning.models import Run
from dunning.report import markdown, summary_lines
from dunning.shards import Shard
from tests.conftest import Portfolio, query
from tests.helpers import DUNNING, counts, day, run


def _running(db_url: str) -> list[Run]:
    with transaction(get_engine(db_url)) as session:
        return list(session.execute(select(Run).where(Run.status == "running")).scalars())


@contextmanager
def _stuck_run(portfolio: Portfolio, db_url: str) -> Iterator[tuple[subprocess.Popen[str], Run]]:
    """A real `dunning run` of day 1, mid-flight: it took the lock, recorded itself, and waits
    in the pull for an accounting API that accepts the connection and never answers (a CSV
    file could not hold it there: `dunning run` reads the files before it starts). Killed at
    the end if alive; the CSV policy is put back."""
    from prefect.settings import get_current_settings

    policy = portfolio.folder / "policy.yaml"
    saved = policy.read_text(encoding="utf-8")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # never accepted: the kernel completes the handshake, nobody answers
    data = yaml.safe_load(saved)
    endpoint = {"pagination": {"kind": "none"}, "items": ""}
    data["source"] = {"kind": "http", "timeout": 300, "retries": 0,
                      "base_url": f"http://127.0.0.1:{silent.getsockname()[1]}",
                      "customers": {"path": "/customers", **endpoint},
                      "invoices": {"path": "/invoices", **endpoint}}
    policy.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = os.environ | {"PREFECT_API_URL": str(get_current_settings().api.url)}
    process = subprocess.Popen([DUNNING, "run", "--as-of", day(1).isoformat()], env=env,
                               cwd=portfolio.folder, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (rows := _running(db_url)):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never recorded itself"
            time.sleep(0.2)
        yield process, rows[0]
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        silent.close()
        policy.write_text(saved, encoding="utf-8")


@pytest.mark.usefixtures("prefect_server")
def test_a_second_run_is_refused_at_once_and_a_killed_run_is_marked_crashed(
        portfolio: Portfolio, db_url: str) -> None:
    from flows.daily import daily_dunning

    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    with _stuck_run(portfolio, db_url) as (holder, first):
        before = counts(db_url)
        began = time.monotonic()
        second = subprocess.run([DUNNING, "run", "--as-of", day(1).isoformat()],
                                cwd=portfolio.folder, capture_output=True, text=True,
                                timeout=60)
        took = time.monotonic() - began
        assert second.returncode == 2, second.stderr
        started = first.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert (f"run {first.id} of the whole book, for business date 2026-11-03, is in "
                f"progress (started {started})") in second.stderr
        assert "Nothing was changed." in second.stderr
        assert took < 10, f"refused after {took:.1f} s: it should not wait for Prefect"
        # A deployment runs the flow without the command line: the flow takes the lock itself.
        with pytest.raises(RunInProgress, match=first.id):
            daily_dunning(as_of=day(1))
        # Only runs of the same shard exclude each other.
        daily.check_no_run_in_progress(daily.load_context(), Shard(1, 2))
        assert counts(db_url) == before
        assert [row.id for row in _running(db_url)] == [first.id]

        holder.send_signal(signal.SIGKILL)
        holder.wait()

    report = run(day(1))
    assert report["crashed_runs"] == [{"run_id": first.id, "as_of": "2026-11-03",
                                       "started_at": first.started_at.astimezone(UTC).isoformat()}]
    assert report["evaluation"]["entered"] == {"friendly_reminder": 1}
    line = (f"crashed: run {first.id} of 2026-11-03, started {started}, stopped without "
            "finishing (its process died): marked crashed")
    assert line in summary_lines(report)
    assert f"- {line}" in markdown(report)
    ((state, finished),) = query(db_url, "SELECT status, finished_at FROM run WHERE id = :i",
                                 i=first.id)
    assert state == "crashed" and finished is not None
    assert run(day(1))["crashed_runs"] == [], "a crash is reported once"


def test_the_lock_is_per_shard_and_dies_with_its_holder(db_url: str, tmp_path: Path) -> None:
    """A process that holds shard 1/2's lock, killed with `kill -9`, blocks nobody."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from dunning.db import get_engine\n"
         "from dunning.runlock import held\n"
         "from dunning.shards import Shard\n"
         "with held(get_engine(sys.argv[1]), Shard(1, 2)):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(600)\n", db_url],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        engine = get_engine(db_url)
        with pytest.raises(RunInProgress, match=r"another run of shard 1/2 is in progress \(it "
                                                r"has not recorded itself yet\)"):
            runlock.check_free(engine, Shard(1, 2))
        runlock.check_free(engine, Shard(2, 2))
        runlock.check_free(engine, None)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 10  # PostgreSQL ends the dead client's session
        while True:
            try:
                runlock.check_free(engine, Shard(1, 2))
                break
            except RunInProgress:
                assert time.monotonic() < deadline, "the dead holder's lock outlived it"
                time.sleep(0.1)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
