"""The accounting system's JSON API as the source, against a local server playing it: cursor and
page pagination, field mapping, credentials from the environment, retries, and a failed page
that changes nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import query
from tests.helpers import as_json, cli, day, run

pytestmark = pytest.mark.usefixtures("prefect_server")

CUSTOMERS = [
    {"id": "C1", "legal_name": "Dupont SARL", "contacts": {"billing_email": "ap@dupont.example"},
     "lang": "fr"},
    {"id": "C2", "legal_name": "Jansen BV", "contacts": {"billing_email": "ap@jansen.example"},
     "lang": "nl"},
    {"id": "C3", "legal_name": "Huber GmbH", "contacts": {}, "lang": "de"},
]


def invoice(n: int, customer: str, due: str, total: Any = "1200.50", balance: Any = None) -> \
        dict[str, Any]:
    return {"id": f"I{n}", "ref": f"F-{n}", "customer": {"id": customer}, "due_on": due,
            "total": total, "balance": total if balance is None else balance}


class AccountingApi:
    """Customers by cursor (2 a page), invoices by page number (`per_page` a page)."""

    def __init__(self) -> None:
        self.invoices = [invoice(1, "C1", day(-5).isoformat()),
                         invoice(2, "C2", day(-4).isoformat(), 99.95),
                         invoice(3, "C1", day(-40).isoformat())]
        self.failures: dict[tuple[str, str], int] = {}  # (path, page or cursor) -> 5xx to give
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.auth = "Bearer secret-token"
        self.page_cap: int | None = None

    def _fail(self, path: str, key: str) -> bool:
        left = self.failures.get((path, key), 0)
        if left:
            self.failures[(path, key)] = left - 1
            return True
        return False

    def customers(self, request: Request) -> Response:
        self.calls.append(("customers", dict(request.args)))
        if request.headers.get("Authorization") != self.auth:
            return Response("no", status=401)
        cursor = request.args.get("after", "")
        if self._fail("customers", cursor):
            return Response("busy", status=503)
        start = int(cursor or 0)
        page = CUSTOMERS[start:start + 2]
        following = str(start + 2) if start + 2 < len(CUSTOMERS) else None
        return Response(json.dumps({"data": page, "meta": {"next": following}}),
                        content_type="application/json")

    def invoices_page(self, request: Request) -> Response:
        self.calls.append(("invoices", dict(request.args)))
        if request.headers.get("Authorization") != self.auth:
            return Response("no", status=401)
        page, size = int(request.args["page"]), int(request.args["per_page"])
        size = min(size, self.page_cap or size)
        if self._fail("invoices", str(page)):
            return Response("busy", status=503)
        assert request.args["status"] == "open"
        items = self.invoices[(page - 1) * size: page * size]
        return Response(json.dumps({"results": items}), content_type="application/json")


@pytest.fixture
def api(httpserver: HTTPServer) -> AccountingApi:
    fake = AccountingApi()
    httpserver.expect_request("/api/customers").respond_with_handler(fake.customers)
    httpserver.expect_request("/api/invoices").respond_with_handler(fake.invoices_page)
    return fake


@pytest.fixture
def http_policy(portfolio: Any, policy_file: Path, httpserver: HTTPServer,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    data["source"] = {
        "kind": "http", "base_url": httpserver.url_for("/api"), "timeout": 5, "retries": 1,
        "backoff": 0,
        "auth": {"type": "bearer", "token_env": "ERP_TOKEN"},
        "customers": {"path": "/customers", "items": "data",
                      "pagination": {"kind": "cursor", "param": "after", "next": "meta.next"},
                      "fields": {"customer_id": "id", "name": "legal_name",
                                 "email": "contacts.billing_email", "language": "lang"}},
        "invoices": {"path": "/invoices", "items": "results", "params": {"status": "open"},
                     "pagination": {"kind": "page", "param": "page", "size_param": "per_page",
                                    "size": 2},
                     "fields": {"invoice_id": "id", "number": "ref", "customer_id": "customer.id",
                                "due_date": "due_on", "amount": "total",
                                "amount_open": "balance"}},
    }
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.setenv("ERP_TOKEN", "secret-token")
    return data


def _save(policy_file: Path, data: dict[str, Any]) -> None:
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")


def test_every_page_is_read_through_the_mapping(api: AccountingApi, http_policy: Any) -> None:
    report = run(day(0))
    assert report["snapshot"] == {"customers": 3, "invoices": 3, "rejected": 0}
    assert report["evaluation"]["entered"] == {"friendly_reminder": 3}
    rows = {r["invoice_id"]: r for r in as_json("status")}
    assert rows["I2"]["amount_open"] == "99.95", "JSON numbers are read exactly"
    assert (rows["I3"]["customer_id"], rows["I3"]["number"]) == ("C1", "F-3")
    customer_pages = [args.get("after") for path, args in api.calls if path == "customers"]
    invoice_pages = [args["page"] for path, args in api.calls if path == "invoices"]
    assert customer_pages == [None, "2"] and invoice_pages == ["1", "2", "3"]


def test_an_item_with_a_bad_field_is_rejected_and_the_rest_goes_on(api: AccountingApi,
                                                                   http_policy: Any) -> None:
    api.invoices.append(invoice(4, "C2", "next tuesday"))
    report = run(day(0), expect=3)
    assert report["rejected_rows"] == [{"file": "GET /invoices", "line": 4, "field": "due_date",
                                        "message": "'next tuesday' is not a date (expected "
                                                   "YYYY-MM-DD)", "id": "I4"}]
    assert report["snapshot"]["invoices"] == 3


def test_items_over_the_field_limits_are_rejected_like_csv_rows(api: AccountingApi,
                                                               http_policy: Any) -> None:
    api.invoices.append(invoice(4, "C2", day(-4).isoformat()) | {"id": "J" * 101})
    api.invoices.append(invoice(5, "C2", day(-4).isoformat()) | {"ref": "9" * 10_000})
    report = run(day(0), expect=3)
    assert [(r["file"], r["line"], r["field"]) for r in report["rejected_rows"]] == [
        ("GET /invoices", 4, "invoice_id"), ("GET /invoices", 5, "number")]
    assert report["snapshot"]["invoices"] == 3
    assert report["dispatch"]["sent"] == 2, "the other customers are dunned"


def test_a_busy_page_is_retried(api: AccountingApi, http_policy: Any) -> None:
    api.failures[("invoices", "2")] = 1
    report = run(day(0))
    assert report["snapshot"]["invoices"] == 3
    assert [a["page"] for p, a in api.calls if p == "invoices"] == ["1", "2", "2", "3"]


def test_a_page_that_keeps_failing_changes_nothing(api: AccountingApi, http_policy: Any,
                                                   db_url: str) -> None:
    run(day(0))
    before = query(db_url, "SELECT count(*) FROM transition")[0][0]
    api.failures[("invoices", "2")] = 2  # more than the one retry
    result = cli("run", "--as-of", day(1).isoformat())
    assert result.exit_code == 1
    assert "HTTP 503 after 2 attempts; the pull is abandoned and nothing was changed" in \
        result.stderr
    assert query(db_url, "SELECT count(*) FROM transition")[0][0] == before
    assert {r["state"] for r in as_json("status")} == {"active"}, "I3 was not settled"
    assert query(db_url, "SELECT count(*) FROM run")[0][0] == 1


def test_refused_credentials_are_a_configuration_error(api: AccountingApi, http_policy: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "wrong")
    result = cli("run", "--as-of", day(0).isoformat())
    assert result.exit_code == 2 and "HTTP 401" in result.stderr
    monkeypatch.delenv("ERP_TOKEN")
    result = cli("run", "--as-of", day(0).isoformat())
    assert result.exit_code == 2
    assert "source.auth.token_env: the environment variable ERP_TOKEN is not set" in result.stderr


def test_basic_auth_and_a_single_page(api: AccountingApi, http_policy: dict[str, Any],
                                      policy_file: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    api.auth = "Basic " + base64.b64encode(b"erp-user:s3cret").decode()
    http_policy["source"]["auth"] = {"type": "basic", "username_env": "ERP_USER",
                                     "password_env": "ERP_PASSWORD"}
    http_policy["source"]["invoices"]["pagination"] = {"kind": "page", "size": 100}
    _save(policy_file, http_policy)
    monkeypatch.setenv("ERP_USER", "erp-user")
    monkeypatch.setenv("ERP_PASSWORD", "s3cret")
    report = run(day(0))
    assert report["snapshot"]["invoices"] == 3
    assert [c[1]["page"] for c in api.calls if c[0] == "invoices"] == ["1", "2"]


def test_a_short_page_does_not_end_the_list(api: AccountingApi, http_policy: dict[str, Any],
                                            policy_file: Path) -> None:
    """An API that serves fewer items than asked (its own cap) must still be read to the end."""
    http_policy["source"]["invoices"]["pagination"]["size"] = 500  # the double serves 500...
    _save(policy_file, http_policy)
    api.page_cap = 2  # ...but caps pages at 2
    report = run(day(0))
    assert report["snapshot"]["invoices"] == 3 and report["reconcile"]["settled"] == 0


def _endless_source(httpserver: HTTPServer, **limits: Any) -> Any:
    from dunning.policy import HttpSource

    return HttpSource.model_validate({
        "kind": "http", "base_url": httpserver.url_for("/erp"), "retries": 0, **limits,
        "customers": {"path": "/customers", "items": "data",
                      "pagination": {"kind": "cursor", "param": "after", "next": "next"}},
        "invoices": {"path": "/invoices", "items": "results",
                     "pagination": {"kind": "page", "size": 1}},
    })


def test_a_pagination_that_never_ends_is_abandoned_after_max_pages(
        httpserver: HTTPServer) -> None:
    """A new cursor on every page, forever: today the pull would read 100,000 pages."""
    from dunning.errors import SourceUnavailable
    from dunning.sources.http import read_http_snapshot

    pages: list[str] = []

    def endless(request: Request) -> Response:
        cursor = int(request.args.get("after", "0"))
        pages.append(str(cursor))
        return Response(json.dumps({"data": [{"customer_id": f"C{cursor}", "name": "x"}],
                                    "next": str(cursor + 1)}), content_type="application/json")

    httpserver.expect_request("/erp/customers").respond_with_handler(endless)
    source = _endless_source(httpserver, max_pages=25)
    with pytest.raises(SourceUnavailable) as error:
        read_http_snapshot(source, default_language="fr", default_currency="EUR")
    assert "more than source.max_pages (25) pages, the pull was abandoned" in str(error.value)
    assert str(error.value).endswith("nothing was changed")
    assert len(pages) == 25


def test_pages_that_never_empty_are_abandoned_after_max_seconds(
        httpserver: HTTPServer) -> None:
    import time

    from dunning.errors import SourceUnavailable
    from dunning.sources.http import read_http_snapshot

    httpserver.expect_request("/erp/customers").respond_with_json(
        {"data": [{"customer_id": "C1", "name": "x"}], "next": None})
    served: list[int] = []

    def never_empty(request: Request) -> Response:
        served.append(int(request.args["page"]))
        time.sleep(0.05)
        return Response(json.dumps({"results": [invoice(len(served), "C1", "2026-10-01")]}),
                        content_type="application/json")

    httpserver.expect_request("/erp/invoices").respond_with_handler(never_empty)
    source = _endless_source(httpserver, max_seconds=1)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as error:
        read_http_snapshot(source, default_language="fr", default_currency="EUR")
    assert time.monotonic() - started < 5
    assert "the pull took more than source.max_seconds (1 s) and was abandoned" in \
        str(error.value)
    assert 5 < len(served) < 25 and served == list(range(1, len(served) + 1))


def test_an_empty_answer_settles_nothing(api: AccountingApi, http_policy: Any,
                                         db_url: str) -> None:
    """Today: `{"results": []}` settles every open invoice, exit 0."""
    run(day(0))
    api.invoices = []
    result = cli("run", "--as-of", day(1).isoformat())
    assert result.exit_code == 2
    assert "the snapshot holds no invoice at all, and would settle every one of the 3 open " \
        "invoices (2,500.95 open): an export cut short looks just like this." in result.stderr
    assert {r["state"] for r in as_json("status")} == {"active"}
    assert query(db_url, "SELECT count(*) FROM run")[0][0] == 1
