"""The daily run as a credit manager lives it, through the command line and the Prefect flow,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import uuid
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
import yaml

from dunning.report import summary_lines
from tests.conftest import Portfolio, query
from tests.helpers import as_json, cli, counts, day, outbox, run, status, work_calls

pytestmark = pytest.mark.usefixtures("prefect_server")


def text_of(message: email.message.Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).decode()  # type: ignore[union-attr]
    raise AssertionError("no text part")


# SQLite only, for the suite's time budget: the other tests of this file cover PostgreSQL.
@pytest.mark.sqlite_only
def test_a_month_of_mornings(portfolio: Portfolio, db_url: str) -> None:
    """Day 0 one email: the friendly reminder of one invoice and the pre-due reminder of the
    other, in sections; a week later the second; the first invoice's own friendly reminder
    waits for the customer's cadence; then a call; then a formal notice that waits for a
    person."""
    portfolio.customer("C1")
    portfolio.invoice("SOON", "C1", due=day(5), amount="800.00")
    portfolio.invoice("LATE", "C1", due=day(-40), amount="2500.00", amount_open="1500.00")
    portfolio.write()

    run(day(0))
    rows = status(portfolio)
    assert (rows["SOON"]["stage"], rows["LATE"]["stage"]) == ("pre_due_reminder",
                                                               "friendly_reminder")
    assert rows["LATE"]["days_overdue"] == 40 and rows["LATE"]["amount_open"] == "1500.00"
    (message,) = outbox(portfolio)
    text = text_of(message)
    assert text.index("Now overdue:") < text.index("F-LATE") < text.index("Due soon:") \
        < text.index("F-SOON")
    assert str(make_header(decode_header(message["Subject"]))).startswith(
        "Payment reminder: invoice F-LATE")

    for n in range(1, 7):
        report = run(day(n))
        assert report["evaluation"]["entered"] == {}, f"nothing moves on day {n}"
    report = run(day(7))
    assert report["evaluation"]["entered"] == {"second_reminder": 1}

    report = run(day(8))  # SOON is 3 days overdue, but the customer was written to yesterday
    assert report["evaluation"]["entered"] == {}
    assert status(portfolio)["SOON"]["waiting"] == (
        "waiting for friendly_reminder: customer written to 1 day ago < 7")
    run(day(12))
    assert status(portfolio)["LATE"]["stage"] == "phone_call"
    work_calls()  # the collector calls: the formal notice may follow
    report = run(day(14))
    assert report["evaluation"]["entered"] == {"friendly_reminder": 1}
    report = run(day(19))
    assert report["evaluation"]["awaiting_approval"] == {"formal_notice": 1}
    rows = status(portfolio)
    assert rows["LATE"]["stage"] == "phone_call", "no transition before approval"
    action_id = rows["LATE"]["pending_action"]
    pending = as_json("actions", "--status", "pending_approval")
    assert [(a["action_id"], a["kind"], a["invoice_ids"]) for a in pending] == [
        (action_id, "letter", ["LATE"])]

    result = cli("approve", str(action_id), "--by", "Claire Martin", "--comment", "go")
    assert result.exit_code == 0, result.stderr
    history = as_json("history", "LATE")
    assert [(h["from_stage"], h["to_stage"], h["actor"]) for h in history] == [
        (None, "friendly_reminder", "dunning"),
        ("friendly_reminder", "second_reminder", "dunning"),
        ("second_reminder", "phone_call", "dunning"),
        ("phone_call", "formal_notice", "Claire Martin"),
    ]
    assert history[0]["reason"] == "40 days overdue ≥ 3"
    assert history[3]["reason"] == ("59 days overdue ≥ 30; phone_call entered 7 days ago ≥ 7; "
                                    "approved by Claire Martin: go")
    assert all(h["run_id"] for h in history[:3]) and history[3]["run_id"] is None
    assert as_json("actions", "--status", "approved")[0]["action_id"] == action_id


def test_one_email_per_customer_per_stage_lists_every_invoice(portfolio: Portfolio) -> None:
    portfolio.customer("C1", language="fr", name="Boulangerie <Dupont>")
    portfolio.customer("C2", language="de", country="DE")
    for n, amount in enumerate(["1234.50", "100.00", "20.05"]):
        portfolio.invoice(f"A{n}", "C1", due=day(-5 - n), amount=amount)
    portfolio.invoice("B1", "C2", due=day(-4), amount="99.99")
    portfolio.invoice("CN", "C1", due=day(-20), amount="-300.00")
    portfolio.write()

    report = run(day(0))
    assert report["evaluation"]["entered"] == {"friendly_reminder": 4}
    assert report["evaluation"]["actions_created"] == {"email": 2}
    assert report["dispatch"]["sent"] == 2
    messages = {m["To"]: m for m in outbox(portfolio)}
    french = text_of(messages["ap@c1.example"])
    for number in ("F-A0", "F-A1", "F-A2"):
        assert number in french
    assert "F-CN" not in french, "credit notes are never dunned"
    assert "1\u202f354,55\u00a0€" in french, "the total, in French formatting"
    html = [p for p in messages["ap@c1.example"].walk() if p.get_content_type() == "text/html"]
    assert "Boulangerie &lt;Dupont&gt;" in html[0].get_payload(decode=True).decode()
    german = text_of(messages["ap@c2.example"])
    assert "99,99\u00a0€" in german and "F-B1" in german
    actions = as_json("actions")
    assert sorted(len(a["invoice_ids"]) for a in actions) == [1, 3]
    assert {a["status"] for a in actions} == {"sent"}


def test_rerunning_a_day_changes_and_sends_nothing(portfolio: Portfolio, db_url: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-3))
    portfolio.invoice("I2", "C1", due=day(4))
    portfolio.write()
    run(day(0))
    before, files = counts(db_url), len(outbox(portfolio))
    assert before[0] == 2 and files == 1  # two steps, one email: one voice per customer
    again = run(day(0))
    assert again["evaluation"]["entered"] == {} and again["dispatch"]["sent"] == 0
    assert counts(db_url) == before and len(outbox(portfolio)) == files


def test_an_earlier_date_is_refused_and_changes_nothing(portfolio: Portfolio,
                                                        db_url: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-3))
    portfolio.write()
    run(day(5))
    before = counts(db_url)
    result = cli("run", "--as-of", day(4).isoformat())
    assert result.exit_code == 2
    assert "earlier than the last run (2026-11-07)" in result.stderr
    assert "The business date is --as-of" in result.stderr
    assert counts(db_url) == before
    assert query(db_url, "SELECT count(*) FROM run")[0][0] == 1


def test_settlement_cancels_what_was_not_delivered(portfolio: Portfolio, db_url: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("PAID", "C1", due=day(-40))
    portfolio.invoice("GONE", "C1", due=day(-41))
    portfolio.invoice("OPEN", "C1", due=day(-42))
    portfolio.write()
    # Walk them to the formal notice, which waits for approval (the call made on day 12).
    for n in (0, 7, 12, 19):
        run(day(n))
        work_calls()
    pending = as_json("actions", "--status", "pending_approval")
    assert len(pending) == 1 and sorted(pending[0]["invoice_ids"]) == ["GONE", "OPEN", "PAID"]

    portfolio.pay("PAID")
    portfolio.remove("GONE")
    portfolio.write()
    report = run(day(20))
    assert report["reconcile"]["settled"] == 2
    action = as_json("actions", "--status", "pending_approval")[0]
    assert action["invoice_ids"] == ["OPEN"]
    assert sorted(action["dropped_invoice_ids"]) == ["GONE", "PAID"]
    rows = status(portfolio)
    assert (rows["PAID"]["state"], rows["PAID"]["pending_action"]) == ("closed", None)
    settled = as_json("history", "GONE")[-1]
    assert (settled["event"], settled["reason"], settled["detail"]) == (
        "settled", "settled", "absent from the snapshot")

    portfolio.pay("OPEN")
    portfolio.write()
    run(day(21))
    assert as_json("actions", "--status", "pending_approval") == []
    cancelled = as_json("actions", "--status", "cancelled")
    # The notice that was never approved: nothing undelivered survives.
    assert [(a["kind"], a["action_id"]) for a in cancelled] == [
        ("letter", action["action_id"])]
    result = cli("approve", str(action["action_id"]), "--by", "Claire")
    assert result.exit_code == 2 and "is cancelled, not waiting for approval" in result.stderr


def test_a_rejected_stage_is_not_proposed_again(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.write()
    for n in (0, 7, 12, 19):
        run(day(n))
        work_calls()
    action_id = status(portfolio)["I1"]["pending_action"]
    result = cli("reject", str(action_id), "--by", "Claire", "--reason", "key account, call CFO")
    assert result.exit_code == 0, result.stderr
    for n in (20, 40, 80):
        report = run(day(n))
        assert report["evaluation"]["awaiting_approval"] == {}
    assert status(portfolio)["I1"]["stage"] == "phone_call"
    last = as_json("history", "I1")[-1]
    assert (last["event"], last["actor"]) == ("rejected", "Claire")
    assert "key account, call CFO" in last["reason"]
    assert as_json("actions", "--status", "rejected")[0]["action_id"] == action_id


def test_bad_rows_are_reported_and_the_rest_goes_on(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("GOOD", "C1", due=day(-5))
    portfolio.invoice("KEEP", "C1", due=day(-6))
    portfolio.write()
    run(day(0))
    portfolio.remove("KEEP")
    portfolio.extra_invoice_lines = ["KEEP,C1,F-KEEP,,2026-10-27,EUR,\"1 000,00\",1000",
                                     "NEW,C404,F-NEW,,2026-10-27,EUR,5,5"]
    portfolio.write()
    report = run(day(1), expect=3)
    rejected = {(r["line"], r["field"], r["id"]) for r in report["rejected_rows"]}
    assert rejected == {(3, "amount", "KEEP"), (4, "customer_id", "NEW")}
    rows = status(portfolio)
    assert rows["KEEP"]["state"] == "active", "a bad row is not a payment"
    assert "NEW" not in rows
    result = cli("run", "--as-of", day(2).isoformat())
    assert result.exit_code == 3
    assert "rejected invoices.csv:3: amount: '1 000,00' is not an amount" in result.stderr


def test_a_missing_snapshot_changes_nothing(portfolio: Portfolio, db_url: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    run(day(0))
    before = counts(db_url)
    (portfolio.folder / "invoices.csv").unlink()
    result = cli("run", "--as-of", day(1).isoformat())
    assert result.exit_code == 2
    assert "invoices.csv: file not found; nothing was changed" in result.stderr
    assert counts(db_url) == before
    assert status(portfolio)["I1"]["state"] == "active"


def test_a_dry_run_writes_and_sends_nothing(portfolio: Portfolio, db_url: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.invoice("I2", "C1", due=day(-50))
    portfolio.write()
    run(day(0))
    before = counts(db_url)
    portfolio.pay("I1")
    portfolio.write()
    report = run(day(7), "--dry-run")
    assert report["dry_run"] is True
    assert report["reconcile"]["settled"] == 1
    assert report["evaluation"]["entered"] == {"second_reminder": 1}
    assert report["dispatch"]["would_send"] == 1 and report["dispatch"]["sent"] == 0
    assert counts(db_url) == before and len(outbox(portfolio)) == 1
    assert query(db_url, "SELECT count(*) FROM run")[0][0] == 1
    assert status(portfolio)["I1"]["state"] == "active"


def test_a_customer_without_email_fails_visibly(portfolio: Portfolio) -> None:
    portfolio.customer("C1", email=None)
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    report = run(day(0))
    assert report["dispatch"]["failed"] == 1
    assert report["dispatch"]["errors"][0]["customer_id"] == "C1"
    failed = as_json("actions", "--status", "failed")
    assert "customer C1 has no email address" in failed[0]["last_error"]
    assert f"  email (action {failed[0]['action_id']}, customer C1): {failed[0]['last_error']}" \
        in summary_lines(report)
    assert outbox(portfolio) == []


def test_the_flow_directly_reports_and_records_its_run(portfolio: Portfolio,
                                                       db_url: str) -> None:
    from flows.daily import daily_dunning

    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    report = daily_dunning(as_of=day(0))
    assert report["evaluation"]["entered"] == {"friendly_reminder": 1}
    (run_id, business_date, state, sent, transitions), = query(
        db_url, "SELECT id, business_date, status, actions_sent, transitions FROM run")
    assert run_id == report["run_id"] and state == "completed"
    assert (str(business_date), sent, transitions) == ("2026-11-02", 1, 1)
    assert query(db_url, "SELECT DISTINCT run_id FROM transition")[0][0] == run_id

    markdown, table = asyncio.run(_artifacts(run_id))
    assert "# Dunning run of 2026-11-02" in markdown
    assert "| friendly_reminder | 1 | 0 |" in markdown
    assert '"stage": "friendly_reminder"' in table and '"entered": 1' in table


async def _artifacts(run_id: str) -> tuple[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        TaskRunFilter,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    by_key: dict[str, Any] = {}
    async with get_client() as client:
        # A loaded test server can show an artifact a moment after the flow returns.
        for _ in range(40):
            # Prefect 3.8's client sends nulls the server refuses unless every argument is
            # given.
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)])),
                flow_run_filter=FlowRunFilter(), task_run_filter=TaskRunFilter(),
                sort=ArtifactSort.CREATED_DESC, limit=20)
            by_key = {a.key: a.data for a in found}
            if {"dunning-daily-report", "dunning-daily-stages"} <= by_key.keys():
                break
            await asyncio.sleep(0.25)
    return str(by_key["dunning-daily-report"]), str(by_key["dunning-daily-stages"])


def test_a_paid_invoice_that_comes_back_is_reopened(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    run(day(0))
    portfolio.pay("I1")
    portfolio.write()
    run(day(1))
    portfolio.pay("I1", "1000.00")  # the transfer bounced
    portfolio.write()
    run(day(2))
    history = as_json("history", "I1")
    assert [h["event"] for h in history] == ["stage", "settled", "reopened"]
    assert status(portfolio)["I1"]["stage"] == "friendly_reminder"


def test_unknown_ids_exit_2(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    run(day(0))
    assert cli("history", "NOPE").exit_code == 2
    assert cli("approve", "999", "--by", "x").exit_code == 2
    assert cli("status", "--customer", "NOPE").exit_code == 2
    assert cli("actions", "--status", "bogus").exit_code == 2


def test_a_waiting_proposal_grows_instead_of_multiplying(portfolio: Portfolio) -> None:
    """Invoices reaching the formal notice on later mornings join the customer's proposal."""
    portfolio.customer("C1")
    portfolio.invoice("EARLY", "C1", due=day(-40))
    portfolio.invoice("LATER", "C1", due=day(-3))
    portfolio.write()
    for n in (0, 7, 12, 19):
        run(day(n))
        work_calls()
    (first,) = as_json("actions", "--status", "pending_approval")
    assert first["invoice_ids"] == ["EARLY"]
    report = run(day(27))  # LATER: 30 days overdue, its call 15 days ago
    assert report["evaluation"]["awaiting_approval"] == {"formal_notice": 1}
    assert report["evaluation"]["actions_created"] == {}
    (grown,) = as_json("actions", "--status", "pending_approval")
    assert grown["action_id"] == first["action_id"]
    assert sorted(grown["invoice_ids"]) == ["EARLY", "LATER"]
    result = cli("approve", str(grown["action_id"]), "--by", "Claire")
    assert result.exit_code == 0, result.stderr
    rows = status(portfolio)
    assert rows["EARLY"]["stage"] == rows["LATER"]["stage"] == "formal_notice"


def test_a_stage_removed_from_the_policy_stops_the_run(portfolio: Portfolio, policy_file: Path,
                                                       db_url: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.write()
    run(day(0))
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    data["stages"][1]["name"] = "first_reminder"  # was friendly_reminder
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    before = counts(db_url)
    result = cli("run", "--as-of", day(7).isoformat())
    assert result.exit_code == 2
    assert "friendly_reminder (1 invoices)" in result.stderr
    assert counts(db_url) == before


def test_an_invoice_moved_to_another_customer_leaves_the_old_call_list(
        portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.customer("C2")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.invoice("I2", "C1", due=day(-40))
    portfolio.write()
    for n in (0, 7, 12):
        run(day(n))
    (task,) = as_json("calls")
    assert task["invoice_ids"] == ["I1", "I2"]
    portfolio.invoices["I2"]["customer_id"] = "C2"  # re-booked to the right customer
    portfolio.write()
    run(day(13))
    (task,) = as_json("calls")
    assert (task["customer_id"], task["invoice_ids"]) == ("C1", ["I1"])
    assert status(portfolio)["I2"]["customer_id"] == "C2"


def test_an_export_cut_short_settles_nothing_until_confirmed(portfolio: Portfolio,
                                                             db_url: str) -> None:
    for n in range(30):
        portfolio.customer(f"C{n:02d}")
        portfolio.invoice(f"I{n:02d}", f"C{n:02d}", due=day(-5))
    portfolio.write()
    run(day(0))
    for n in range(5, 30):
        portfolio.remove(f"I{n:02d}")  # the export stopped after five rows
    portfolio.write()
    before = counts(db_url)
    result = cli("run", "--as-of", day(1).isoformat())
    assert result.exit_code == 2
    assert "would settle 25 of the 30 open invoices (25,000.00 of 30,000.00 open), of 25 of " \
        "the 30 customers" in result.stderr
    assert counts(db_url) == before
    assert {r["state"] for r in as_json("status")} == {"active"}
    report = run(day(1), "--accept-mass-settlement")
    assert report["reconcile"]["settled"] == 25
