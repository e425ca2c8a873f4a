"""One voice per customer, over ten weeks of business days through the command line: customers
whose invoices fall due on staggered dates, a payment, a dispute, formal notices approved. The
cadence is checked on the outbox itself (messages per recipient and their dates), the open
notices and call tasks on the ledger every evening."""

from __future__ import annotations

import email.message
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

from tests.conftest import Portfolio, query
from tests.helpers import as_json, change_policy, cli, day, outbox, run, work_calls

GAP, PER_MONTH, DEADLINE = 7, 4, 8  # the default policy's contact and letters settings


def business_days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)
            if (first + timedelta(days=n)).weekday() < 5]


def _story(portfolio: Portfolio) -> None:
    for customer in ("BUSY", "PAYS", "NOTICE"):
        portfolio.customer(customer)
    # BUSY: eight invoices falling due five days apart, from ten days before the story on.
    for k in range(8):
        portfolio.invoice(f"B{k}", "BUSY", day(-10 + 5 * k))
    # PAYS: one long overdue, one paid after its first reminder, one disputed.
    portfolio.invoice("P1", "PAYS", day(-20))
    portfolio.invoice("P2", "PAYS", day(-3))
    portfolio.invoice("P3", "PAYS", day(10))
    # NOTICE: one invoice near its formal notice, another that reaches it while the first one's
    # notice runs.
    portfolio.invoice("N1", "NOTICE", day(-26), amount="4000.00")
    portfolio.invoice("N2", "NOTICE", day(-12), amount="3000.00")
    portfolio.write()


def _message_day(message: email.message.Message) -> date:
    """The business date a message was decided on: its dedupe key starts with it."""
    return date.fromisoformat(message["X-Dunning-Action"].split(":")[0])


def _open_notices(db_url: str, on: date) -> dict[int, int]:
    rows = query(db_url, "SELECT customer_id, status, attempted_on, business_date FROM action "
                         "WHERE kind = 'letter' AND status NOT IN ('cancelled', 'rejected')")
    out: Counter[int] = Counter()
    for customer_id, status, attempted, decided in rows:
        sent_on = attempted or decided
        sent_on = date.fromisoformat(sent_on) if isinstance(sent_on, str) else sent_on
        if status != "sent" or sent_on + timedelta(days=DEADLINE) >= on:
            out[customer_id] += 1
    return dict(out)


def test_one_voice_over_ten_weeks(portfolio: Portfolio, db_url: str, policy_file: Path) -> None:
    # The reference rate of 2026-H2 is not in config/rates.yaml yet: a contractual rate applies.
    change_policy(policy_file, law={"rate": "12.15"})
    _story(portfolio)
    approved_ids: list[int] = []  # the notices a person approved
    for today in business_days(day(0), day(70)):
        if today == day(14):
            portfolio.pay("P2")
            portfolio.write()
        run(today)
        work_calls()  # the collectors call every day
        if today == day(18):
            result = cli("dispute", "P3", "--reason", "goods returned", "--by", "Sam")
            assert result.exit_code == 0, result.stderr
        for action in as_json("actions", "--status", "pending_approval"):
            if action["stage"] == "formal_notice":
                assert cli("approve", str(action["action_id"]), "--by", "Claire").exit_code == 0
                approved_ids.append(action["action_id"])
        # Every evening: at most one open formal notice and one open call task per customer.
        assert all(n <= 1 for n in _open_notices(db_url, today).values()), today
        tasks = query(db_url, "SELECT customer_id, count(*) FROM action WHERE kind = 'phone' "
                              "AND status IN ('queued', 'approved') GROUP BY customer_id")
        assert all(n <= 1 for _, n in tasks), (today, tasks)

    # A message goes out on the day it was decided (its dedupe key starts with it), a formal
    # notice on the day after its approval: the day the ledger recorded its delivery.
    sent_on = {key: (date.fromisoformat(on) if isinstance(on, str) else on, kind == "letter")
               for key, kind, on in query(db_url, "SELECT dedupe_key, kind, attempted_on "
                                                   "FROM action WHERE status = 'sent'")}
    assert sum(exempt for _, exempt in sent_on.values()) == len(approved_ids) >= 2
    by_recipient: dict[str, list[tuple[date, bool]]] = defaultdict(list)
    for message in outbox(portfolio):
        key = message["X-Dunning-Action"]
        assert sent_on[key][0] == _message_day(message) or sent_on[key][1], key
        by_recipient[message["To"]].append(sent_on[key])
    for recipient, messages in by_recipient.items():
        messages.sort()
        days = [d for d, _ in messages]
        assert len(set(days)) == len(days), (f"{recipient}: two messages on one day",
                                             messages)
        for (before, _), (after, exempt) in zip(messages, messages[1:], strict=False):
            if not exempt:
                assert (after - before).days >= GAP, (recipient, before, after)
        months = Counter((d.year, d.month) for d, exempt in messages if not exempt)
        assert max(months.values()) <= PER_MONTH, (recipient, months)

    # Without the cadence, BUSY's eight invoices would each have had their own reminders (and
    # several on some days); with it, BUSY heard from us at most weekly, each invoice still
    # climbed to its call: none was forgotten.
    assert len(by_recipient["ap@busy.example"]) <= 11
    state = {row["invoice_id"]: row for row in as_json("status")}
    for k in range(8):
        reached = [t["to_stage"] for t in as_json("history", f"B{k}")]
        assert "friendly_reminder" in reached and "second_reminder" in reached, (k, reached)
        assert "phone_call" in reached, (k, reached)
    # One email lists invoices in sections when they are at different steps.
    sectioned = [m for m in outbox(portfolio) if m["To"] == "ap@busy.example"
                 and "Already reminded" in _text(m)]
    assert sectioned and any("Now overdue" in _text(m) for m in sectioned)
    # The paid and the disputed invoices were left alone after that.
    assert state["P3"]["state"] == "paused", [(h["business_date"], h["event"], h["to_stage"],
                                               h["reason"]) for h in as_json("history", "P3")]
    # Formal notices: a customer's next one only after the deadline of the one before, and
    # only for invoices no earlier notice covered.
    notices: dict[int, dict[int, tuple[date, set[str]]]] = defaultdict(dict)
    for action_id, customer_id, on, invoice in query(
            db_url, "SELECT a.id, a.customer_id, a.attempted_on, i.external_id FROM action a "
                    "JOIN action_invoice ai ON ai.action_id = a.id "
                    "JOIN invoice i ON i.id = ai.invoice_id "
                    "WHERE a.kind = 'letter' AND a.status = 'sent'"):
        on = date.fromisoformat(on) if isinstance(on, str) else on
        notices[customer_id].setdefault(action_id, (on, set()))[1].add(invoice)
    assert max(len(mine) for mine in notices.values()) >= 2, notices
    for mine in notices.values():
        ordered = sorted(mine.values(), key=lambda notice: notice[0])
        for (before, covered), (after, invoices) in zip(ordered, ordered[1:], strict=False):
            assert (after - before).days > DEADLINE and not covered & invoices, ordered


def _text(message: email.message.Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    return ""
