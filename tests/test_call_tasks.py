"""One open call task per customer, late tasks first on the call list, and call outcomes that
cannot be true refused: told as stories through the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Portfolio, query
from tests.helpers import as_json, cli, day, run, status

pytestmark = pytest.mark.usefixtures("prefect_server")


def _phone_actions() -> list[dict[str, Any]]:
    return [a for a in as_json("actions") if a["kind"] == "phone"]


def _phone_entry(invoice: str) -> dict[str, Any]:
    (entry,) = [h for h in as_json("history", invoice)
                if h["event"] == "stage" and h["to_stage"] == "phone_call"]
    return entry


def test_an_invoice_reaching_the_phone_stage_later_joins_the_open_task(
        portfolio: Portfolio, db_url: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.invoice("I2", "C1", due=day(-2))  # friendly on day 7, second on 14, phone on 19
    portfolio.write()
    for n in (0, 7, 12):
        run(day(n))
    (task,) = as_json("calls")
    assert (task["invoice_ids"], task["due_on"]) == (["I1"], day(14).isoformat())
    touched = query(db_url, "SELECT updated_at FROM action WHERE id = :id",
                    id=task["task_id"])[0][0]
    run(day(14))
    report = run(day(19))
    assert report["evaluation"]["entered"].get("phone_call") == 1
    (phone,) = _phone_actions()
    assert (phone["action_id"], phone["status"]) == (task["task_id"], "queued")
    assert phone["invoice_ids"] == ["I1", "I2"]
    assert _phone_entry("I2")["action_id"] == task["task_id"]
    assert status(portfolio)["I2"]["stage"] == "phone_call"
    (task,) = as_json("calls")
    assert task["invoice_ids"] == ["I1", "I2"] and task["total_open"] == "2000.00 EUR"
    assert task["due_on"] == day(14).isoformat(), "joining does not push the due date back"
    assert query(db_url, "SELECT updated_at FROM action WHERE id = :id",
                 id=task["task_id"])[0][0] != touched


def test_after_a_task_is_done_the_next_phone_stage_makes_a_new_task(
        portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.invoice("I2", "C1", due=day(-2))
    portfolio.write()
    for n in (0, 7, 12):
        run(day(n))
    (first,) = as_json("calls")
    done = cli("call-done", str(first["task_id"]), "--by", "Nadia", "--outcome", "dispute",
               "--reason", "goods damaged", "--invoice", "I1")
    assert done.exit_code == 0, done.stderr
    for n in (14, 19):
        run(day(n))
    (second,) = as_json("calls")
    assert second["task_id"] != first["task_id"] and second["invoice_ids"] == ["I2"]
    assert second["due_on"] == day(21).isoformat()
    assert _phone_entry("I2")["action_id"] == second["task_id"]
    assert [(a["action_id"], a["status"]) for a in _phone_actions()] == [
        (first["task_id"], "sent"), (second["task_id"], "queued")]


def test_the_call_list_flags_late_tasks_and_puts_them_first(portfolio: Portfolio) -> None:
    for customer in ("LATE", "LATER", "FRESH"):
        portfolio.customer(customer)
    portfolio.invoice("L1", "LATE", due=day(-40), amount="300.00")
    portfolio.invoice("M1", "LATER", due=day(-40), amount="2000.00")
    portfolio.invoice("F1", "FRESH", due=day(-2), amount="9000.00")  # phone on day 19
    portfolio.write()
    for n in (0, 7, 12):
        run(day(n))
    later = {t["customer_id"]: t["task_id"] for t in as_json("calls")}["LATER"]
    moved = cli("call-done", str(later), "--by", "Nadia", "--outcome", "callback",
                "--on", day(16).isoformat())
    assert moved.exit_code == 0, moved.stderr
    for n in (14, 19):
        run(day(n))
    tasks = as_json("calls")
    # By money alone FRESH (9000 × 21 days) would come first, then LATER, then LATE.
    assert [(t["customer_id"], t["overdue"], t["days_late"]) for t in tasks] == [
        ("LATE", True, 5), ("LATER", True, 3), ("FRESH", False, 0)]
    table = cli("calls")
    assert table.exit_code == 0 and "3 calls to make, 2 past their due date" in table.stdout


@pytest.mark.parametrize(("currencies", "args", "message"), [
    (("EUR", "EUR"), ["--outcome", "promise", "--until", day(11).isoformat()],
     "the promised date 2026-11-13 is before the business date 2026-11-14"),
    (("EUR", "EUR"), ["--outcome", "callback", "--on", day(11).isoformat()],
     "the callback date 2026-11-13 is before the business date 2026-11-14"),
    (("EUR", "EUR"), ["--outcome", "promise", "--until", day(20).isoformat(),
                      "--amount", "2000.01"],
     "the promised amount 2000.01 is above the 2000.00 EUR open"),
    (("EUR", "EUR"), ["--outcome", "promise", "--until", day(20).isoformat(),
                      "--amount", "1500", "--invoice", "I1"],
     "the promised amount 1500 is above the 1000.00 EUR open"),
    (("EUR", "USD"), ["--outcome", "promise", "--until", day(20).isoformat(),
                      "--amount", "500"],
     "are in several currencies (EUR, USD)"),
], ids=["past promise date", "past callback date", "amount above open",
        "amount above the invoices named", "amount over two currencies"])
def test_call_outcomes_that_cannot_be_true_exit_2_and_change_nothing(
        portfolio: Portfolio, db_url: str, currencies: tuple[str, str], args: list[str],
        message: str) -> None:
    portfolio.customer("C1")
    for invoice, currency in zip(("I1", "I2"), currencies, strict=True):
        portfolio.invoice(invoice, "C1", due=day(-40), currency=currency)
    portfolio.write()
    for n in (0, 7, 12):
        run(day(n))
    (task,) = as_json("calls")
    result = cli("call-done", str(task["task_id"]), "--by", "Nadia", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr and "nothing was recorded" in result.stderr
    assert "--" in result.stderr.split("nothing was recorded")[1], "the command's hint follows"
    assert as_json("calls") == [task]
    assert query(db_url, "SELECT count(*) FROM call_outcome")[0][0] == 0
    rows = status(portfolio)
    assert [(rows[i]["state"], rows[i]["stage"]) for i in ("I1", "I2")] == [
        ("active", "phone_call")] * 2


def test_a_promise_in_one_currency_of_a_mixed_task_is_recorded(portfolio: Portfolio) -> None:
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(-40))
    portfolio.invoice("I2", "C1", due=day(-40), currency="USD")
    portfolio.write()
    for n in (0, 7, 12):
        run(day(n))
    (task,) = as_json("calls")
    done = as_json("call-done", str(task["task_id"]), "--by", "Nadia", "--outcome", "promise",
                   "--until", day(12).isoformat(), "--amount", "1000", "--invoice", "I1")
    assert (done["status"], done["invoices_paused"]) == ("sent", 1)
    assert status(portfolio)["I1"]["state_reason"] == "promise"
