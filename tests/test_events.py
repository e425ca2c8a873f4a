"""SendGrid's Event Webhook, served by the real `dunning events serve` and posted to with
`requests`, signed with a P-256 key made for the test: only signed, fresh requests are taken;
events settle unknown messages, bounces flag the address and send a letter or call the customer
instead, and the invoices wait for that fallback to reach the customer."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pypdf import PdfReader
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tests.conftest import Portfolio, query
from tests.helpers import DUNNING, as_json, day, hanging_sendgrid, one_invoice_each, run

pytestmark = pytest.mark.usefixtures("prefect_server")

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def endpoint(portfolio: Portfolio) -> Iterator[str]:
    """`dunning events serve` in its own process, on the test's database and policy."""
    port = _free_port()
    env = os.environ | {"SENDGRID_WEBHOOK_PUBLIC_KEY": PUBLIC}
    server = subprocess.Popen([DUNNING, "events", "serve", "--port", str(port)], env=env,
                              cwd=portfolio.folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/events/sendgrid"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.post(url, data=b"[]", timeout=2)
            break
        except requests.ConnectionError:
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the events endpoint never answered"
            time.sleep(0.1)
    yield url
    server.terminate()
    server.communicate(timeout=30)


def _post(url: str, events: list[dict[str, Any]], key: Any = KEY,
          stamp: int | None = None) -> requests.Response:
    payload = json.dumps(events)
    when = str(stamp if stamp is not None else int(time.time()))
    signature = key.sign((when + payload).encode(), ec.ECDSA(hashes.SHA256()))
    return requests.post(url, data=payload.encode(), timeout=30, headers={
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": when})


def _event(name: str, key: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {"event": name, "dunning_action_key": key, "sg_event_id": event_id,
            "timestamp": int(time.time()), "email": "ap@c0000.example", **extra}


def test_only_signed_fresh_requests_are_taken(portfolio: Portfolio, endpoint: str,
                                              db_url: str) -> None:
    events = [_event("delivered", "k", "e1")]
    unsigned = requests.post(endpoint, data=json.dumps(events).encode(), timeout=30)
    assert unsigned.status_code == 401
    assert _post(endpoint, events, key=OTHER).status_code == 403
    stale = _post(endpoint, events, stamp=int(time.time()) - 3600)
    assert stale.status_code == 403 and "stale" in stale.json()["error"]
    tampered = _post(endpoint, events)  # a valid signature, then the body changed
    forged = requests.post(endpoint, data=json.dumps([_event("bounce", "k", "e2")]).encode(),
                           timeout=30, headers={
        key: tampered.request.headers[key] for key in (
            "X-Twilio-Email-Event-Webhook-Signature", "X-Twilio-Email-Event-Webhook-Timestamp")})
    assert forged.status_code == 403
    assert tampered.status_code == 200 and tampered.json()["unmatched"] == 1
    assert query(db_url, "SELECT event FROM delivery_event") == [("delivered",)]


def test_a_delivered_event_settles_an_unknown_message_whatever_the_order(
        portfolio: Portfolio, policy_file: Path, silent_server: str, db_url: str,
        monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    hanging_sendgrid(policy_file, monkeypatch, silent_server)
    one_invoice_each(portfolio, 1)
    run(day(0))
    (action,) = as_json("actions", "--status", "unknown")
    key = query(db_url, f"SELECT dedupe_key FROM action WHERE id = {action['action_id']}")[0][0]
    answer = _post(endpoint, [_event("delivered", key, "d1"), _event("processed", key, "p1"),
                              _event("delivered", key, "d1")])  # sent twice by SendGrid
    assert answer.status_code == 200, answer.text
    assert answer.json()["duplicates"] == 1
    assert answer.json()["changed"] == {str(action["action_id"]): "sent"}
    assert _post(endpoint, [_event("delivered", key, "d1")]).json()["duplicates"] == 1
    assert as_json("actions", "--status", "unknown") == []
    assert query(db_url, "SELECT event FROM delivery_event ORDER BY id") == [
        ("delivered",), ("processed",)]


def _bouncing(policy_file: Path, monkeypatch: pytest.MonkeyPatch, httpserver: HTTPServer,
              fallback: str) -> None:
    """Every email stage's `on_bounce` set to `fallback`; SendGrid played by `httpserver`,
    taking every message."""
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    for stage in data["stages"]:
        if stage["channel"] == "email":
            stage["on_bounce"] = fallback
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    monkeypatch.setenv("SENDGRID_API_HOST", httpserver.url_for("").rstrip("/"))
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_handler(
        lambda request: Response("", status=202, headers={"X-Message-Id": "m1"}))


def test_a_bounce_flags_the_address_and_calls_the_customer_instead(
        portfolio: Portfolio, policy_file: Path, httpserver: HTTPServer, db_url: str,
        monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    _bouncing(policy_file, monkeypatch, httpserver, "phone")
    one_invoice_each(portfolio, 1)
    run(day(0))
    (email,) = [a for a in as_json("actions") if a["kind"] == "email"]
    key = query(db_url, f"SELECT dedupe_key FROM action WHERE id = {email['action_id']}")[0][0]
    answer = _post(endpoint, [_event("bounce", key, "b1", reason="550 5.1.1 no such user",
                                     type="bounce")])
    assert answer.json()["changed"] == {str(email["action_id"]): "bounced"}
    (task_id,) = answer.json()["fallbacks"]
    assert query(db_url, "SELECT address, event FROM bad_address") == [
        ("ap@c0000.example", "bounce")]
    (task,) = [a for a in as_json("actions") if a["action_id"] == task_id]
    assert (task["kind"], task["status"], task["invoice_ids"]) == ("phone", "queued", ["I0000"])
    (why,) = query(db_url, "SELECT reason FROM transition WHERE event = 'fallback'")
    assert "bounced: a call instead" in why[0]
    # The invoice waits for the call, then goes on from the day it was made
    run(day(7))
    waiting = {row["invoice_id"]: row["waiting"] for row in as_json("status")}["I0000"]
    assert f"its friendly_reminder call task (action {task_id}) is not worked yet" in waiting
    done = as_json("call-done", str(task_id), "--by", "Marc", "--outcome", "reached")
    assert done["status"] == "sent"
    assert run(day(13))["evaluation"]["entered"] == {}  # 6 days after the call
    assert run(day(14))["evaluation"]["entered"] == {"second_reminder": 1}
    # a later message to the bad address is not attempted
    portfolio.invoice("I0001", "C0000", due=day(20))
    portfolio.write()
    report = run(day(30))
    failed = [e for e in report["dispatch"]["errors"] if e["customer_id"] == "C0000"]
    assert failed and "every email address bounced" in failed[0]["error"]
    assert len(httpserver.log) == 1, "nothing posted to the bounced address"


@pytest.mark.sqlite_only  # the fallback's queries run on both in the test above
def test_a_bounce_sends_a_reminder_letter_by_post_and_the_ladder_waits_for_its_posting(
        portfolio: Portfolio, policy_file: Path, httpserver: HTTPServer, db_url: str,
        monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    _bouncing(policy_file, monkeypatch, httpserver, "letter")
    letters = portfolio.folder / "letters"
    monkeypatch.setenv("DUNNING_LETTERS_DIR", str(letters))
    one_invoice_each(portfolio, 1)
    run(day(0))
    (email,) = as_json("actions")
    key = query(db_url, f"SELECT dedupe_key FROM action WHERE id = {email['action_id']}")[0][0]
    answer = _post(endpoint, [_event("bounce", key, "b1", reason="550 no such user")])
    (letter_id,) = answer.json()["fallbacks"]
    assert query(db_url, f"SELECT kind, template, status FROM action WHERE id = {letter_id}") \
        == [("letter", "reminder_letter", "queued")]
    (why,) = query(db_url, "SELECT reason FROM transition WHERE event = 'fallback'")
    assert why[0].endswith("bounced: a letter by post instead")

    # The next run prints it for the post (no email: the address bounced), without interest
    report = run(day(1))
    assert (report["letters"]["sent"], report["letters"]["post_only"]) == (1, 1)
    assert len(httpserver.log) == 1, "nothing emailed"
    (pdf,) = letters.glob("*.pdf")
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(pdf).pages)
    assert "Reminder of unpaid invoices" in text and "could not be delivered" in text
    assert "F-I0000" in text and "interest" not in text.lower()
    assert "11 November 2026" in text  # the date to pay by: the letter's date + payment_days
    printed = as_json("letters", "print", "--date", day(1).isoformat(), "--out",
                      str(portfolio.folder / "post.pdf"))
    assert [row["mail"] for row in printed["rows"]] == ["ordinary"]

    # The second reminder waits for the letter's posting, and counts from it
    run(day(8))
    waiting = {row["invoice_id"]: row["waiting"] for row in as_json("status")}["I0000"]
    assert waiting.startswith("held at friendly_reminder: its friendly_reminder reminder letter")
    assert "waits to be posted" in waiting
    posted = as_json("letter-posted", str(letter_id), "--on", day(8).isoformat(), "--by", "Paul")
    assert (posted["tracking"], posted["recorded"]) == (None, True)
    run(day(9))
    waiting = {row["invoice_id"]: row["waiting"] for row in as_json("status")}["I0000"]
    assert waiting == "waiting for second_reminder: friendly_reminder delivered 1 day ago < 7"
    assert run(day(15))["evaluation"]["entered"] == {"second_reminder": 1}
