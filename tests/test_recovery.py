"""Every message exactly once: a run killed with `kill -9` mid-dispatch leaves claims that the next
run (or `dunning recover`) settles by what can be known; a provider that may have a message
leaves it `unknown`, never sent again by guess, until a person decides (dunning/recovery.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import Portfolio, query
from tests.helpers import DUNNING, as_json, cli, day, hanging_sendgrid, one_invoice_each, run

pytestmark = pytest.mark.usefixtures("prefect_server")


def _statuses(db_url: str) -> dict[str, int]:
    return dict(query(db_url, "SELECT status, count(*) FROM action GROUP BY status"))


def _start_run(portfolio: Portfolio, **env: str) -> subprocess.Popen[str]:
    """A real `dunning run` of day 0 in its own process."""
    from prefect.settings import get_current_settings

    environment = os.environ | {"PREFECT_API_URL": str(get_current_settings().api.url)} | env
    return subprocess.Popen([DUNNING, "run", "--as-of", day(0).isoformat()], env=environment,
                            cwd=portfolio.folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(process: subprocess.Popen[str], ready: Any, what: str) -> None:
    deadline = time.monotonic() + 180
    while not ready():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_run_killed_while_writing_the_outbox_loses_and_repeats_nothing(
        portfolio: Portfolio, db_url: str, workers: str) -> None:
    one_invoice_each(portfolio, 600)
    outbox = portfolio.folder / "outbox"
    # with workers, the run's process is killed: its workers lose their parent and stop
    process = _start_run(portfolio, DUNNING_DISPATCH_WORKERS=workers)
    _kill_when(process, lambda: outbox.is_dir() and sum(1 for _ in outbox.glob("*.eml")) >= 30,
               "wrote 30 messages")
    left = _statuses(db_url)
    stuck, queued = left.get("sending", 0), left.get("queued", 0)
    assert stuck > 0, "the kill came after the dispatch: nothing to recover"
    written = {p.name for p in outbox.glob("*.eml")}
    time.sleep(0.5)  # orphaned workers, if any, notice their parent is gone
    recovered = as_json("recover")
    assert [p.name for p in outbox.iterdir() if not p.name.endswith(".eml")] == [], \
        "the dead workers' folders are swept"
    # A claim whose file exists was written: sent. The others never went out: queued again.
    assert len(recovered["sent"]) + len(recovered["requeued"]) == stuck
    assert recovered["unknown"] == []
    by_id = {int(name[:8]): name for name in written}
    assert set(recovered["sent"]) <= set(by_id)
    assert not set(recovered["requeued"]) & set(by_id)
    assert _statuses(db_url).get("sending", 0) == 0
    events = query(db_url, "SELECT event, count(*) FROM delivery_event GROUP BY event")
    assert dict(events) == {k: len(v) for k, v in (("recovered_sent", recovered["sent"]),
                                                  ("recovered_queued", recovered["requeued"]))
                            if v}
    report = run(day(0))  # the rerun of the day sends what was queued again, and the rest
    assert report["dispatch"]["sent"] == len(recovered["requeued"]) + queued
    run(day(1))
    assert _statuses(db_url) == {"sent": 600}
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 600, "one file a message: none lost, none twice"
    assert Counter(int(p.name[:8]) for p in files).most_common(1)[0][1] == 1
    provider = dict(query(db_url, "SELECT id, provider_id FROM action"))
    assert all(provider[int(p.name[:8])] == f"outbox:{p.name}" for p in files)


def test_a_run_killed_while_posting_to_sendgrid_leaves_unknown_never_posted_twice(
        portfolio: Portfolio, db_url: str, sendgrid: HTTPServer, policy_file: Path) -> None:
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    data["email"]["concurrency"] = 4
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    one_invoice_each(portfolio, 40)
    posted: list[str] = []
    hold = threading.Event()

    def handler(request: Request) -> Response:
        posted.append(request.get_json()["custom_args"]["dunning_action_key"])
        if len(posted) >= 15:
            hold.wait(60)  # the 15th call hangs: the run is killed during it
        return Response("", status=202, headers={"X-Message-Id": f"m{len(posted)}"})

    sendgrid.expect_request("/v3/mail/send", method="POST").respond_with_handler(handler)
    process = _start_run(portfolio)
    try:
        _kill_when(process, lambda: len(posted) >= 15, "posted 15 messages")
    finally:
        hold.set()
    left = _statuses(db_url)
    stuck = left.get("sending", 0)
    # claimed ten at a time, four calls at once: at most two chunks were out
    assert 0 < stuck <= 20 and sum(left.values()) == 40
    report = run(day(0))
    assert len(report["recovered"]["unknown"]) == stuck
    assert report["dispatch"]["sent"] == left.get("queued", 0)
    report = run(day(1))
    assert report["dispatch"]["sent"] == 0, "unknown messages are never sent again by guess"
    assert _statuses(db_url) == {"sent": 40 - stuck, "unknown": stuck}
    assert max(Counter(posted).values()) == 1, "no dedupe key posted twice"
    unknown = as_json("actions", "--status", "unknown")
    assert len(unknown) == stuck and "may or may not have it" in unknown[0]["last_error"]
    # A person settles them: one seen in SendGrid's activity feed, one sent again.
    first, second = unknown[0]["action_id"], unknown[-1]["action_id"]
    done = cli("mark-sent", str(first), "--by", "Claire", "--reason", "in SendGrid's feed")
    assert done.exit_code == 0, done.stderr
    done = cli("redeliver", str(second), "--by", "Claire", "--reason", "not in the feed")
    assert done.exit_code == 0, done.stderr
    assert cli("mark-sent", str(first), "--by", "Claire", "--reason", "again").exit_code == 2
    second_key = query(db_url, f"SELECT dedupe_key FROM action WHERE id = {second}")[0][0]
    before = Counter(posted)
    report = run(day(2))
    assert report["dispatch"]["sent"] == 1
    assert Counter(posted) - before == Counter({second_key: 1}), \
        "sent again once, by a person's decision"
    people = query(db_url, "SELECT action_id, event, by, reason FROM delivery_event "
                           "WHERE source = 'person' ORDER BY id")
    assert people == [(first, "mark_sent", "Claire", "in SendGrid's feed"),
                      (second, "redeliver", "Claire", "not in the feed")]


def test_a_timeout_after_the_request_left_is_unknown_not_failed(
        portfolio: Portfolio, policy_file: Path, silent_server: str, db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hanging_sendgrid(policy_file, monkeypatch, silent_server)
    one_invoice_each(portfolio, 1)
    report = run(day(0))
    assert (report["dispatch"]["unknown"], report["dispatch"]["failed"]) == (1, 0)
    (action,) = as_json("actions", "--status", "unknown")
    assert "may have gone out" in action["last_error"] and action["attempts"] == 1
    run(day(1))
    (action,) = as_json("actions", "--status", "unknown")
    assert action["attempts"] == 1, "not sent again the next day"
    # A refused connection never reached SendGrid: failed, retried by a later day.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    monkeypatch.setenv("SENDGRID_API_HOST", f"http://127.0.0.1:{port}")
    portfolio.customer("C9")
    portfolio.invoice("I9", "C9", due=day(-5))
    portfolio.write()
    report = run(day(2))
    assert (report["dispatch"]["failed"], report["dispatch"]["unknown"]) == (1, 0)
    assert "SendGrid unreachable" in as_json("actions", "--status", "failed")[0]["last_error"]


def test_an_outbox_file_is_found_whatever_the_length_of_its_action_id(tmp_path: Path) -> None:
    from dunning.recovery import _written

    for action_id in (7, 12345678, 123456789):
        (tmp_path / f"{action_id:08d}_2026-11-02_friendly_reminder_{action_id}_ab.eml").touch()
    (tmp_path / "00000008_key.eml.tmp").touch()  # half-written, never renamed: not found
    assert _written(tmp_path, {7, 8, 12345678, 123456789}) == {
        7: "00000007_2026-11-02_friendly_reminder_7_ab.eml",
        12345678: "12345678_2026-11-02_friendly_reminder_12345678_ab.eml",
        123456789: "123456789_2026-11-02_friendly_reminder_123456789_ab.eml"}
