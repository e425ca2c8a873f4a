"""Email through the real `sendgrid` client, against a local server playing SendGrid."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import Portfolio, query
from tests.helpers import as_json, day, run

pytestmark = pytest.mark.usefixtures("prefect_server")


def _accept(seen: list[dict[str, Any]], status: int = 202, message_id: str = "msg-1"):  # type: ignore[no-untyped-def]
    def handler(request: Request) -> Response:
        seen.append({"auth": request.headers.get("Authorization"), "body": request.get_json()})
        return Response("" if status == 202 else json.dumps({"errors": [{"message": "boom"}]}),
                        status=status, headers={"X-Message-Id": message_id})
    return handler


def test_the_v3_payload_and_the_message_id(portfolio: Portfolio, sendgrid: HTTPServer,
                                           db_url: str) -> None:
    portfolio.customer("C1", email="a@c1.example; b@c1.example", language="nl", country="BE")
    portfolio.invoice("I1", "C1", due=day(-4), amount="1500.00")
    portfolio.invoice("I2", "C1", due=day(-3), amount="250.00")
    portfolio.write()
    seen: list[dict[str, Any]] = []
    sendgrid.expect_request("/v3/mail/send", method="POST").respond_with_handler(_accept(seen))

    report = run(day(0))
    assert report["dispatch"]["sent"] == 1
    assert len(seen) == 1
    body = seen[0]["body"]
    assert seen[0]["auth"] == "Bearer SG.test-key"
    assert body["personalizations"][0]["to"] == [{"email": "a@c1.example"},
                                                 {"email": "b@c1.example"}]
    assert body["from"] == {"email": "recouvrement@atelier-exemple.example",
                            "name": "Atelier Exemple — Service recouvrement"}
    assert body["reply_to"] == {"email": "recouvrement@atelier-exemple.example"}
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert "F-I1" in body["content"][0]["value"] and "1.750,00" in body["content"][0]["value"]
    action = as_json("actions")[0]
    assert body["custom_args"]["dunning_action_key"] == query(
        db_url, "SELECT dedupe_key FROM action")[0][0]
    assert body["custom_args"]["dunning_action_id"] == str(action["action_id"])
    assert (action["status"], action["provider_id"]) == ("sent", "sendgrid:msg-1")


def test_the_transfer_qr_code_goes_as_an_inline_image(portfolio: Portfolio,
                                                      sendgrid: HTTPServer) -> None:
    portfolio.customer("C1", language="fr", country="FR")
    portfolio.invoice("I1", "C1", due=day(-4), amount="1500.00")
    portfolio.write()
    seen: list[dict[str, Any]] = []
    sendgrid.expect_request("/v3/mail/send", method="POST").respond_with_handler(_accept(seen))

    assert run(day(0))["dispatch"]["sent"] == 1
    body = seen[0]["body"]
    (image,) = body["attachments"]
    assert (image["type"], image["disposition"]) == ("image/png", "inline")
    assert base64.b64decode(image["content"]).startswith(b"\x89PNG\r\n")
    assert f'src="cid:{image["content_id"]}"' in body["content"][1]["value"]


def test_a_server_error_fails_the_action_and_the_next_run_retries(
        portfolio: Portfolio, sendgrid: HTTPServer) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-4))
    portfolio.write()
    seen: list[dict[str, Any]] = []
    sendgrid.expect_oneshot_request("/v3/mail/send").respond_with_handler(_accept(seen, 503))
    report = run(day(0))
    assert report["dispatch"]["failed"] == 1
    failed = as_json("actions", "--status", "failed")[0]
    assert "SendGrid answered 503" in failed["last_error"] and failed["attempts"] == 1
    rerun = run(day(0))
    assert (rerun["dispatch"]["sent"], rerun["dispatch"]["failed"], len(seen)) == (0, 0, 1), \
        "a rerun of the same day sends nothing, failures included"

    sendgrid.expect_oneshot_request("/v3/mail/send").respond_with_handler(
        _accept(seen, 202, "msg-2"))
    report = run(day(1))
    assert report["dispatch"]["sent"] == 1
    action = as_json("actions")[0]
    assert (action["status"], action["attempts"], action["provider_id"]) == (
        "sent", 2, "sendgrid:msg-2")
    assert seen[0]["body"]["custom_args"] == seen[1]["body"]["custom_args"]

    run(day(2))
    assert len(seen) == 2, "a sent action is never sent again"


def test_a_refused_message_is_not_retried(portfolio: Portfolio, sendgrid: HTTPServer) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-4))
    portfolio.write()
    seen: list[dict[str, Any]] = []
    sendgrid.expect_request("/v3/mail/send").respond_with_handler(_accept(seen, 400))
    run(day(0))
    run(day(1))
    assert len(seen) == 1
    failed = as_json("actions", "--status", "failed")[0]
    assert "SendGrid answered 400" in failed["last_error"] and "boom" in failed["last_error"]


def test_a_long_refusal_is_kept_short_in_last_error(portfolio: Portfolio,
                                                   sendgrid: HTTPServer) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-4))
    portfolio.write()
    errors = json.dumps({"errors": [{"message": "invalid " * 20_000}]})
    sendgrid.expect_request("/v3/mail/send").respond_with_data(errors, status=400)
    report = run(day(0))
    (failure,) = report["dispatch"]["errors"]
    last_error = as_json("actions", "--status", "failed")[0]["last_error"]
    assert last_error.startswith("SendGrid answered 400: {")
    assert len(last_error) == 500 and last_error.endswith("…")
    assert failure["error"] == last_error


def test_an_internationalised_domain_is_sent_in_ascii(portfolio: Portfolio,
                                                      sendgrid: HTTPServer) -> None:
    """The domain goes as its IDNA A-label; an address SendGrid could not carry as it is (a
    local part outside ASCII) is refused when the export is read, not at delivery."""
    portfolio.customer("C1", email="Compta@Exämple.example")
    portfolio.invoice("I1", "C1", due=day(-4))
    portfolio.customer("C2", email="ü@exämple.example")
    portfolio.invoice("I2", "C2", due=day(-4))
    portfolio.write()
    seen: list[dict[str, Any]] = []
    sendgrid.expect_request("/v3/mail/send").respond_with_handler(_accept(seen))
    report = run(day(0), expect=3)
    assert [(r["file"], r["line"], r["field"]) for r in report["rejected_rows"]] == [
        ("customers.csv", 3, "email"), ("invoices.csv", 3, "customer_id")]
    assert "SMTPUTF8" in report["rejected_rows"][0]["message"]
    assert (report["dispatch"]["sent"], report["dispatch"]["failed"]) == (1, 0)
    assert [p["to"] for p in seen[0]["body"]["personalizations"]] == [
        [{"email": "Compta@xn--exmple-cua.example"}]]


