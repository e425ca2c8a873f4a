"""SendGrid at its own pace (dunning/concurrent_send.py, dunning/pacing.py): a provider that
hangs stops the channel within seconds, a 429 is waited out until its reset, calls keep under
`email.rate_per_second`, and concurrent calls still send each message once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import Portfolio, query
from tests.helpers import as_json, day, email_settings, one_invoice_each, run

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_hanging_provider_stops_the_channel_after_the_failure_limit(
        portfolio: Portfolio, policy_file: Path, silent_server: str, db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 200 messages at 0.5 s each, two at a time, would take 50 s: the breaker stops at 6.
    email_settings(policy_file, timeout=0.5, concurrency=2, max_consecutive_failures=6)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    monkeypatch.setenv("SENDGRID_API_HOST", silent_server)
    one_invoice_each(portfolio, 200)
    began = time.monotonic()
    report = run(day(0))
    assert time.monotonic() - began < 30
    dispatch = report["dispatch"]
    assert "6 transport failures in a row" in dispatch["stopped"]
    assert "stays queued for the next run" in dispatch["stopped"]
    statuses = dict(query(db_url, "SELECT status, count(*) FROM action GROUP BY status"))
    # the calls that went out may have reached SendGrid: unknown; the rest waits, queued
    assert 6 <= statuses["unknown"] <= 6 + 2 and statuses["queued"] == 200 - statuses["unknown"]
    assert "sending" not in statuses


def test_a_429_is_waited_out_until_its_reset(portfolio: Portfolio, sendgrid: HTTPServer,
                                            db_url: str) -> None:
    one_invoice_each(portfolio, 3)
    calls: list[tuple[float, int]] = []
    reset: list[int] = []

    def handler(request: Request) -> Response:
        now = time.time()
        if not reset:
            reset.append(int(now) + 2)  # the limit is reached: it resets in 1-2 s
        if now < reset[0]:
            calls.append((now, 429))
            return Response('{"errors": [{"message": "too many requests"}]}', status=429,
                            headers={"X-RateLimit-Reset": str(reset[0])})
        calls.append((now, 202))
        return Response("", status=202, headers={"X-Message-Id": f"m{len(calls)}"})

    sendgrid.expect_request("/v3/mail/send", method="POST").respond_with_handler(handler)
    report = run(day(0))
    assert (report["dispatch"]["sent"], report["dispatch"]["failed"]) == (3, 0)
    refused = [when for when, status in calls if status == 429]
    # the calls out when the limit was reached are refused once each, then wait for the reset
    assert 1 <= len(refused) <= 3 and len(calls) == len(refused) + 3
    assert all(when >= reset[0] - 0.05 for when, status in calls if status == 202)


def test_calls_keep_under_the_rate_limit(portfolio: Portfolio, sendgrid: HTTPServer,
                                         policy_file: Path) -> None:
    email_settings(policy_file, rate_per_second=10, concurrency=8)
    one_invoice_each(portfolio, 12)
    stamps: list[float] = []
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            stamps.append(time.monotonic())
        return Response("", status=202, headers={"X-Message-Id": "m"})

    sendgrid.expect_request("/v3/mail/send", method="POST").respond_with_handler(handler)
    report = run(day(0))
    assert report["dispatch"]["sent"] == 12
    stamps.sort()
    # twelve calls at ten a second: eleven gaps of a tenth of a second at least
    assert stamps[-1] - stamps[0] >= 1.0


def test_concurrent_calls_send_each_message_once(portfolio: Portfolio, sendgrid: HTTPServer,
                                                 policy_file: Path, db_url: str) -> None:
    email_settings(policy_file, concurrency=16)
    one_invoice_each(portfolio, 120)
    keys: list[str] = []
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            keys.append(request.get_json()["custom_args"]["dunning_action_key"])
            number = len(keys)
        return Response("", status=202, headers={"X-Message-Id": f"m{number}"})

    sendgrid.expect_request("/v3/mail/send", method="POST").respond_with_handler(handler)
    report = run(day(0))
    assert report["dispatch"]["sent"] == 120
    assert set(Counter(keys).values()) == {1} and len(keys) == 120
    providers = {row[0] for row in query(db_url, "SELECT provider_id FROM action")}
    assert len(providers) == 120 and all(p.startswith("sendgrid:m") for p in providers)
    assert as_json("actions", "--status", "sending") == []
