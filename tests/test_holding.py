"""The ladder waits for delivery: a stage counts for the next one's spacing from the day its
message reached the customer; a step that did not (unknown, failed, waiting to be posted, a call
not made) holds the invoice at its stage, said in `status`, until it is delivered or a person
moves it on; no agency case follows a formal notice that was not delivered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Portfolio, query
from tests.helpers import (
    as_json,
    change_policy,
    cli,
    day,
    hanging_sendgrid,
    one_invoice_each,
    run,
    status,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


def _stages(policy_file: Path, stages: list[dict[str, Any]], **fields: Any) -> None:
    change_policy(policy_file, stages=stages, **fields)


def _emails(db_url: str) -> list[tuple[Any, ...]]:
    return query(db_url, "SELECT stage, status FROM action WHERE kind = 'email' ORDER BY id")


def test_an_unknown_email_holds_its_invoice_and_spacing_counts_from_delivery(
        portfolio: Portfolio, policy_file: Path, silent_server: str, db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    change_policy(policy_file, contact={"min_days_between": 0, "max_per_month": 10})
    hanging_sendgrid(policy_file, monkeypatch, silent_server)
    one_invoice_each(portfolio, 1)
    run(day(0))
    ((action_id, state),) = query(db_url, "SELECT id, status FROM action")
    assert state == "unknown"
    # Monday + 7: the second reminder's day, were the first one delivered
    monkeypatch.delenv("SENDGRID_API_KEY")
    report = run(day(7))
    assert report["evaluation"]["entered"] == {}
    why = status(portfolio)["I0000"]["waiting"]
    assert why.startswith("held at friendly_reminder: ")
    assert f"action {action_id}" in why and "may or may not have gone out" in why
    # A person sends it again: it goes out on day 8, and the spacing counts from then
    assert cli("redeliver", str(action_id), "--by", "Claire").exit_code == 0
    run(day(8))
    assert _emails(db_url) == [("friendly_reminder", "sent")]
    run(day(14))
    assert status(portfolio)["I0000"]["waiting"] == (
        "waiting for second_reminder: friendly_reminder delivered 6 days ago < 7")
    assert run(day(15))["evaluation"]["entered"] == {"second_reminder": 1}


def test_no_agency_case_before_the_formal_notice_is_posted(
        portfolio: Portfolio, policy_file: Path, db_url: str) -> None:
    _stages(policy_file, [
        {"name": "formal_notice", "channel": "letter", "days_after_due": 10,
         "requires_approval": True, "template": "formal_notice"},
        {"name": "collection_agency", "channel": "agency", "days_after_due": 20,
         "min_days_since_previous": 5, "requires_approval": True},
    ], law={"rate": "12.15"})  # the 2026-H2 reference rate is not in rates.yaml yet
    portfolio.customer("C1", email=None)  # no email address: the notice goes by post only
    portfolio.invoice("I1", "C1", due=day(-15))
    portfolio.write()
    run(day(0))
    (proposal,) = as_json("actions", "--status", "pending_approval")
    assert cli("approve", str(proposal["action_id"]), "--by", "Claire").exit_code == 0
    run(day(1))
    notice = proposal["action_id"]
    assert query(db_url, f"SELECT status FROM action WHERE id = {notice}") == [("sent",)]
    for n in (10, 30):
        run(day(n))
        assert as_json("actions", "--status", "pending_approval") == []
    why = status(portfolio)["I1"]["waiting"]
    assert why.startswith("held at formal_notice: ") and "waits to be posted" in why
    refused = cli("move-on", str(notice), "--by", "Claire", "--reason", "urgent")
    assert refused.exit_code == 2
    assert "never skipped" in refused.stderr
    assert query(db_url, "SELECT count(*) FROM transition WHERE event = 'moved_on'") == [(0,)]
    posted = cli("letter-posted", str(notice), "--tracking", "1A 234 567 8901 2", "--on",
                 day(30).isoformat(), "--by", "Claire")
    assert posted.exit_code == 0, posted.stderr
    run(day(34))
    assert status(portfolio)["I1"]["waiting"] == (
        "waiting for collection_agency: formal_notice delivered 4 days ago < 5")
    run(day(35))
    (agency,) = as_json("actions", "--status", "pending_approval")
    assert agency["stage"] == "collection_agency"


@pytest.mark.sqlite_only  # the same queries as the tests above, on both
def test_a_person_moves_on_an_invoice_whose_email_cannot_go(
        portfolio: Portfolio, policy_file: Path, db_url: str) -> None:
    change_policy(policy_file, contact={"min_days_between": 0, "max_per_month": 10})
    portfolio.customer("C1", email=None)
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    run(day(0))
    ((action_id, state),) = query(db_url, "SELECT id, status FROM action")
    assert state == "failed"
    run(day(9))
    why = status(portfolio)["I1"]["waiting"]
    assert why.startswith("held at friendly_reminder: ") and "no email address" in why
    moved = as_json("move-on", str(action_id), "--by", "Claire", "--reason",
                    "reminded on the phone")
    assert moved["invoices"] == ["I1"]
    assert run(day(10))["evaluation"]["entered"] == {"second_reminder": 1}
    assert query(db_url, "SELECT event, actor, reason FROM transition ORDER BY id") == [
        ("stage", "dunning", query(db_url, "SELECT reason FROM transition")[0][0]),
        ("moved_on", "Claire", f"moved on without its friendly_reminder email (action "
                               f"{action_id}): reminded on the phone"),
        ("stage", "dunning", query(db_url, "SELECT reason FROM transition")[2][0]),
    ]
    # Nothing waits on it any more: a second move-on is refused, nothing recorded
    again = cli("move-on", str(action_id), "--by", "Claire", "--reason", "again")
    assert again.exit_code == 2
    assert query(db_url, "SELECT count(*) FROM delivery_event WHERE event = 'move_on'") == [(1,)]


@pytest.mark.sqlite_only  # the same queries as the tests above, on both
def test_a_call_not_made_holds_the_invoice_until_its_attempts_are_used_up(
        portfolio: Portfolio, policy_file: Path, db_url: str) -> None:
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    _stages(policy_file, [
        {"name": "phone_call", "channel": "phone", "days_after_due": 3},
        {"name": "second_reminder", "channel": "email", "days_after_due": 5,
         "min_days_since_previous": 2, "template": "second_reminder"},
    ], phone={**data.get("phone", {}), "max_attempts": 2})
    one_invoice_each(portfolio, 1)
    run(day(0))
    (task,) = as_json("calls")
    for on in (day(6), day(7)):
        assert run(on)["evaluation"]["entered"] == {}
        assert "is not worked yet (credit desk" in status(portfolio)["I0000"]["waiting"]
        outcome = cli("call-done", str(task["task_id"]), "--by", "Marc", "--outcome",
                      "no-answer")
        assert outcome.exit_code == 0, outcome.stderr
    assert run(day(8))["evaluation"]["entered"] == {}  # spaced from the last call, day 7
    assert run(day(9))["evaluation"]["entered"] == {"second_reminder": 1}
