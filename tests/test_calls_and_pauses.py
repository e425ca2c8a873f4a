"""What collectors learn on the phone, and the pauses people grant, change what the ladder does
next: told as stories through the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import Portfolio
from tests.helpers import as_json, cli, day, run, status, work_calls

pytestmark = pytest.mark.usefixtures("prefect_server")


def _to_phone_call(portfolio: Portfolio) -> int:
    """Run the mornings that walk 40-day-late invoices to the phone stage; the task's id."""
    for n in (0, 7, 12):
        run(day(n))
    tasks = as_json("calls")
    assert len(tasks) >= 1
    return int(tasks[0]["task_id"])


def _events(invoice: str) -> list[str]:
    return [h["event"] for h in as_json("history", invoice)]


def test_the_call_list_puts_the_most_overdue_money_first(portfolio: Portfolio) -> None:
    portfolio.customer("SMALL")
    portfolio.customer("BIG")
    portfolio.customers["BIG"]["collector"] = "Nadia"
    portfolio.invoice("S1", "SMALL", due=day(-40), amount="300.00")
    portfolio.invoice("B1", "BIG", due=day(-40), amount="9000.00")
    portfolio.invoice("B2", "BIG", due=day(-35), amount="1000.00")
    portfolio.write()
    _to_phone_call(portfolio)
    tasks = as_json("calls")
    assert [t["customer_id"] for t in tasks] == ["BIG", "SMALL"]
    big = tasks[0]
    assert big["invoice_ids"] == ["B1", "B2"] and big["total_open"] == "10000.00 EUR"
    assert (big["assignee"], big["due_on"]) == ("Nadia", day(14).isoformat())
    assert tasks[1]["assignee"] == "credit desk"
    assert any("friendly_reminder (email, sent)" in line for line in big["history"])
    assert [t["customer_id"] for t in as_json("calls", "--assignee", "Nadia")] == ["BIG"]


# SQLite only, for the suite's time budget: the other tests of this file cover PostgreSQL.
@pytest.mark.sqlite_only
def test_a_promise_pauses_and_a_broken_promise_resumes_escalation(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.write()
    task = _to_phone_call(portfolio)
    result = cli("call-done", str(task), "--by", "Nadia", "--outcome", "promise",
                 "--until", day(20).isoformat(), "--amount", "1000")
    assert result.exit_code == 0, result.stderr
    assert as_json("calls") == []
    row = status(portfolio)["I1"]
    assert (row["state"], row["state_reason"]) == ("paused", "promise")
    for n in (19, 22, 23):  # promised by day 20, three days' grace
        report = run(day(n))
        assert report["evaluation"]["awaiting_approval"] == {}, f"paused on day {n}"
    report = run(day(24))
    assert report["reconcile"]["resumed"] == 1
    assert report["evaluation"]["awaiting_approval"] == {"formal_notice": 1}
    history = as_json("history", "I1")
    broken = [h for h in history if h["event"] == "promise_broken"][0]
    assert broken["reason"] == "promise to pay broken"
    assert "1000.00 EUR still open" in broken["detail"]
    paused = [h for h in history if h["event"] == "paused"][0]
    assert (paused["actor"], paused["reason"]) == ("Nadia", "promise to pay by 2026-11-22 (1000)")


def test_a_kept_promise_ends_in_settlement(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.write()
    task = _to_phone_call(portfolio)
    cli("call-done", str(task), "--by", "Nadia", "--outcome", "promise",
        "--until", day(20).isoformat())
    portfolio.pay("I1")
    portfolio.write()
    run(day(18))
    assert _events("I1")[-2:] == ["paused", "settled"]
    assert status(portfolio)["I1"]["state"] == "closed"


def test_a_dispute_on_the_phone_pauses_only_the_disputed_invoice(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.invoice("I2", "C1", due=day(-41))
    portfolio.write()
    task = _to_phone_call(portfolio)
    result = cli("call-done", str(task), "--by", "Nadia", "--outcome", "dispute",
                 "--reason", "goods damaged", "--invoice", "I2")
    assert result.exit_code == 0, result.stderr
    report = run(day(19))
    assert report["evaluation"]["awaiting_approval"] == {"formal_notice": 1}
    notice = as_json("actions", "--status", "pending_approval")[0]
    assert notice["invoice_ids"] == ["I1"]
    assert status(portfolio)["I2"]["state_reason"] == "dispute"

    result = cli("resolve", "I2", "--by", "Claire")
    assert result.exit_code == 0, result.stderr
    report = run(day(20))
    assert report["evaluation"]["awaiting_approval"] == {"formal_notice": 1}
    assert _events("I2")[-2:] == ["paused", "resumed"]


def test_no_answer_three_times_gives_the_task_up(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.write()
    task = _to_phone_call(portfolio)
    for attempt in (1, 2):
        done = as_json("call-done", str(task), "--by", "Nadia", "--outcome", "no-answer")
        assert (done["status"], done["attempts"]) == ("queued", attempt)
    assert as_json("calls")[0]["due_on"] == day(13).isoformat()
    done = as_json("call-done", str(task), "--by", "Nadia", "--outcome", "no-answer")
    assert done["status"] == "failed"
    assert as_json("calls") == []
    failed = as_json("actions", "--status", "failed")[0]
    assert "no answer after 3 calls" in failed["last_error"]
    assert run(day(19))["evaluation"]["awaiting_approval"] == {"formal_notice": 1}


def test_callback_and_wrong_contact(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.write()
    task = _to_phone_call(portfolio)
    done = as_json("call-done", str(task), "--by", "Nadia", "--outcome", "callback",
                   "--on", day(15).isoformat())
    assert (done["status"], done["due_on"]) == ("queued", day(15).isoformat())
    done = as_json("call-done", str(task), "--by", "Nadia", "--outcome", "wrong-contact")
    assert done["status"] == "failed"
    again = cli("call-done", str(task), "--by", "Nadia", "--outcome", "no-answer")
    assert again.exit_code == 2 and "is failed, not open" in again.stderr


def test_paid_claimed_pauses_for_the_payment_in_transit(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.write()
    task = _to_phone_call(portfolio)
    as_json("call-done", str(task), "--by", "Nadia", "--outcome", "paid-claimed")
    assert status(portfolio)["I1"]["state_reason"] == "paid_claimed"
    assert run(day(17))["reconcile"]["resumed"] == 0  # through day 12 + 5
    assert run(day(18))["reconcile"]["resumed"] == 1
    last = as_json("history", "I1")[-1]
    assert (last["event"], last["reason"]) == ("resumed", "claimed payment not received")


@pytest.mark.parametrize(("args", "message"), [
    (["--outcome", "promise"], "--outcome promise needs --until DATE"),
    (["--outcome", "dispute"], "--outcome dispute needs --reason TEXT"),
    (["--outcome", "shrug"], "'shrug' is not one of promise"),
    (["--outcome", "dispute", "--reason", "x", "--invoice", "NOPE"], "NOPE not in call task"),
    (["--outcome", "promise", "--until", "2026-11-20", "--amount", "1,5"],
     "--amount: '1,5' is not a positive amount"),
], ids=["promise without date", "dispute without reason", "unknown outcome", "foreign invoice",
        "bad amount"])
def test_call_outcome_mistakes_exit_2_and_change_nothing(portfolio: Portfolio, args: list[str],
                                                         message: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.write()
    task = _to_phone_call(portfolio)
    result = cli("call-done", str(task), "--by", "Nadia", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert as_json("calls")[0]["task_id"] == task


def test_a_dispute_without_a_call_takes_the_invoice_out_of_pending_messages(
        portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.invoice("I2", "C1", due=day(-40))
    portfolio.write()
    for n in (0, 7, 12, 19):
        run(day(n))
        work_calls()
    notice = as_json("actions", "--status", "pending_approval")[0]
    assert sorted(notice["invoice_ids"]) == ["I1", "I2"]
    result = cli("dispute", "I1", "--by", "Claire", "--reason", "price not as quoted")
    assert result.exit_code == 0, result.stderr
    notice = as_json("actions", "--status", "pending_approval")[0]
    assert notice["invoice_ids"] == ["I2"] and notice["dropped_invoice_ids"] == ["I1"]
    for n in (40, 80):
        run(day(n))
    assert status(portfolio)["I1"]["stage"] == "phone_call"
    result = cli("resolve", "I1", "--by", "Claire", "--credit-note")
    assert result.exit_code == 0, result.stderr
    run(day(81))
    assert status(portfolio)["I1"]["state_reason"] == "credit_note", "waits for the credit note"
    assert cli("resolve", "I1", "--by", "Claire").exit_code == 2


def test_a_customer_on_hold_is_not_dunned_even_for_new_invoices(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.customer("C2")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.invoice("OTHER", "C2", due=day(-5))
    portfolio.write()
    run(day(0))
    result = cli("hold", "C1", "--until", day(10).isoformat(), "--by", "Claire",
                 "--reason", "restructuring agreed with the CFO")
    assert result.exit_code == 0, result.stderr
    portfolio.invoice("I2", "C1", due=day(-2))  # booked during the hold
    portfolio.write()
    for n in (7, 8, 10):
        report = run(day(n))
        assert "I1" not in str(report) and report["evaluation"]["entered"].get(
            "friendly_reminder", 0) == 0
    rows = status(portfolio)
    assert (rows["I1"]["state"], rows["I2"]["stage"]) == ("paused", None)
    report = run(day(11))
    assert report["reconcile"]["resumed"] == 1
    assert report["evaluation"]["entered"] == {"second_reminder": 1, "friendly_reminder": 1}
    assert cli("hold", "NOPE", "--until", "2026-12-01", "--by", "x", "--reason", "y"
               ).exit_code == 2


def test_pausing_a_closed_invoice_is_refused(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    run(day(0))
    portfolio.pay("I1")
    portfolio.write()
    run(day(1))
    result = cli("dispute", "I1", "--by", "Claire", "--reason", "x")
    assert result.exit_code == 2 and "is closed" in result.stderr


def test_an_invoice_back_from_a_dispute_rejoins_its_waiting_proposal(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("A", "C1", due=day(-40))
    portfolio.invoice("B", "C1", due=day(-40))
    portfolio.write()
    for n in (0, 7, 12, 19):
        run(day(n))
        work_calls()
    assert cli("dispute", "A", "--by", "Claire", "--reason", "wrong quantity").exit_code == 0
    (notice,) = as_json("actions", "--status", "pending_approval")
    assert notice["invoice_ids"] == ["B"]
    assert cli("resolve", "A", "--by", "Claire").exit_code == 0
    for n in (20, 21):
        report = run(day(n))
        assert report["evaluation"]["awaiting_approval"] == ({"formal_notice": 1} if n == 20
                                                             else {})
    (notice,) = as_json("actions", "--status", "pending_approval")
    assert notice["invoice_ids"] == ["A", "B"] and notice["dropped_invoice_ids"] == []


def test_a_disputed_invoice_that_leaves_and_comes_back_is_still_disputed(
        portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    run(day(0))
    assert cli("dispute", "I1", "--by", "Claire", "--reason", "wrong price").exit_code == 0
    portfolio.remove("I1")  # a day missing from the export
    portfolio.write()
    # The export is now empty: the mass-settlement guard wants it confirmed.
    run(day(1), "--accept-mass-settlement")
    assert status(portfolio)["I1"]["state"] == "closed"
    portfolio.invoice("I1", "C1", due=day(-5))
    portfolio.write()
    report = run(day(8))
    row = status(portfolio)["I1"]
    assert (row["state"], row["state_reason"]) == ("paused", "dispute")
    assert report["evaluation"]["entered"] == {}
    assert as_json("history", "I1")[-1]["state"] == "paused"
