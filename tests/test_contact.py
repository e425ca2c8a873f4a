"""The contact cadence: one table of rules, then its promises on random customers simulated day
by day through the ladder (never two messages closer than min_days_between, never more than
max_per_month in a calendar month, no invoice forgotten)."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.contact import CustomerContact, Opening, one_voice, opening, pace
from dunning.ladder import InvoiceFacts, decide
from dunning.policy import Contact, Policy, load_policy

REPO = Path(__file__).resolve().parents[1]
POLICY = load_policy(REPO / "config" / "policy.yaml")
D = date(2026, 11, 23)


def ago(*days: int) -> list[date]:
    return [D - timedelta(days=n) for n in days]


CASES = [
    # (id, days written to, business date, min_days_between, max_per_month, expected opening)
    ("never written to", [], D, 7, 4, Opening(D)),
    ("written to 7 days ago: today", ago(7), D, 7, 4, Opening(D)),
    ("written to 3 days ago: 4 days later", ago(3), D, 7, 4,
     Opening(D + timedelta(days=4), "customer written to 3 days ago < 7")),
    ("written to today: never twice a day, even with no gap asked", ago(0), D, 0, 4,
     Opening(D + timedelta(days=1), "customer already written to today")),
    ("written to yesterday, no gap asked: today", ago(1), D, 0, 4, Opening(D)),
    ("the last message counts, not the first", ago(20, 2), D, 7, 4,
     Opening(D + timedelta(days=5), "customer written to 2 days ago < 7")),
    ("four this month: the first of the next", ago(21, 14, 7, 1), D, 0, 4,
     Opening(date(2026, 12, 1), "4 messages to the customer this month ≥ 4")),
    ("a gap and a full month: both said", ago(21, 14, 7, 1), D, 3, 4,
     Opening(date(2026, 12, 1), "customer written to 1 day ago < 3; "
                                "4 messages to the customer this month ≥ 4")),
    ("four last month do not count this month", [date(2026, 10, d) for d in (1, 8, 15, 22)],
     D, 7, 4, Opening(D)),
    ("three this month: one more allowed", ago(21, 14, 7), D, 7, 4, Opening(D)),
    ("the gap ends in the next month, which is empty", [date(2026, 12, 28)], date(2026, 12, 31),
     7, 1, Opening(date(2027, 1, 4), "customer written to 3 days ago < 7")),
    ("the gap ends in a month already full", [date(2026, 11, 2), date(2026, 11, 27)],
     date(2026, 11, 28), 7, 1,
     Opening(date(2026, 12, 4), "customer written to 1 day ago < 7")),
    ("the gap ends inside the full month: the next one", [date(2026, 11, 2), date(2026, 11, 9)],
     date(2026, 11, 10), 7, 2,
     Opening(date(2026, 12, 1), "customer written to 1 day ago < 7; "
                                "2 messages to the customer this month ≥ 2")),
]


@pytest.mark.parametrize("written, as_of, gap, per_month, expected",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_opening(written: list[date], as_of: date, gap: int, per_month: int,
                 expected: Opening) -> None:
    assert opening(written, as_of, gap, per_month) == expected


def test_a_future_day_is_not_counted() -> None:
    """Only what was written by the business date counts (a rerun of an earlier day)."""
    assert opening([D + timedelta(days=1)], D, 7, 4) == Opening(D)


def facts(invoice_id: int, due: date, stage: str | None = None,
          entered: date | None = None) -> InvoiceFacts:
    return InvoiceFacts(invoice_id=invoice_id, customer_id=1, due_date=due,
                        amount=Decimal("1200"), amount_open=Decimal("1200"), stage=stage,
                        stage_entered_on=entered)


def test_pace_holds_back_written_steps_only() -> None:
    """A call, or a step waiting for approval, is not a message: never held back."""
    members = [
        (i, decide(i, POLICY, D)) for i in (
            facts(1, D - timedelta(days=3)),  # friendly reminder: email
            facts(2, D - timedelta(days=15), "second_reminder", D - timedelta(days=5)),  # call
            facts(3, D - timedelta(days=31), "phone_call", D - timedelta(days=16)),  # proposal
        )
    ]
    assert [d.stage for _, d in members] == ["friendly_reminder", "phone_call", "formal_notice"]
    paced = pace(members, CustomerContact(tuple(ago(2))), POLICY, D)
    assert [d.stage for _, d in paced] == [None, "phone_call", "formal_notice"]
    waiting = paced[0][1]
    assert waiting.reason == "waiting for friendly_reminder: customer written to 2 days ago < 7"
    assert waiting.review_on == D + timedelta(days=5)
    assert pace(members, CustomerContact(tuple(ago(7))), POLICY, D) == members


def simulate(policy: Policy, dues: list[date], start: date, days: int
             ) -> tuple[list[date], dict[int, list[str]]]:
    """One customer's invoices through the ladder and the cadence, day by day, each step taken
    as soon as it is decided; proposals are never approved. Returns the days a message went to
    the customer and the stages each invoice entered."""
    invoices = {n: facts(n, due) for n, due in enumerate(dues, 1)}
    written: list[date] = []
    entered: dict[int, list[str]] = {n: [] for n in invoices}
    for day in (start + timedelta(days=k) for k in range(days)):
        members = [(i, decide(i, policy, day)) for i in invoices.values()]
        wrote = False
        for invoice, decision in pace(members, CustomerContact(tuple(written)), policy, day):
            if decision.stage is None:
                continue
            stage = policy.stage(decision.stage)
            if stage.requires_approval:
                invoices[invoice.invoice_id] = InvoiceFacts(
                    invoice.invoice_id, 1, invoice.due_date, invoice.amount, invoice.amount_open,
                    invoice.stage, invoice.stage_entered_on, pending_stage=stage.name)
                continue
            invoices[invoice.invoice_id] = InvoiceFacts(
                invoice.invoice_id, 1, invoice.due_date, invoice.amount, invoice.amount_open,
                stage.name, day)
            entered[invoice.invoice_id].append(stage.name)
            wrote |= stage.channel in ("email", "letter")
        if wrote:
            written.append(day)
    return written, entered


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=-30, max_value=70), min_size=1, max_size=8),
    gap=st.sampled_from([0, 1, 3, 7, 14]),
    per_month=st.sampled_from([1, 2, 4, 8]),
)
def test_cadence_promises(offsets: list[int], gap: int, per_month: int) -> None:
    policy = POLICY.model_copy(update={"contact": Contact(min_days_between=gap,
                                                          max_per_month=per_month)})
    start = date(2026, 1, 5)
    dues = [start + timedelta(days=n) for n in offsets]
    written, entered = simulate(policy, dues, start, 260)

    assert len(set(written)) == len(written), "two messages on one day"
    assert all((b - a).days >= max(gap, 1) for a, b in zip(written, written[1:], strict=False))
    per_month_seen = Counter((day.year, day.month) for day in written)
    assert max(per_month_seen.values(), default=0) <= per_month
    # No invoice forgotten: each took every overdue step up to the call (the proposal after it
    # waits for a person), whatever the cadence held back on the way.
    for stages in entered.values():
        assert [s for s in stages if s != "pre_due_reminder"] == [
            "friendly_reminder", "second_reminder", "phone_call"]


def test_the_default_cadence_on_a_busy_customer() -> None:
    """Twelve invoices falling due a week apart: without the cadence the customer would hear
    from us on most weeks' days; with it, at most one message a week, four a month."""
    start = date(2026, 1, 5)
    dues = [start + timedelta(days=7 * n) for n in range(12)]
    written, entered = simulate(POLICY, dues, start, 200)
    unpaced = POLICY.model_copy(update={"contact": Contact(min_days_between=0,
                                                           max_per_month=31)})
    written_unpaced, _ = simulate(unpaced, dues, start, 200)
    assert len(written_unpaced) > len(written) * 1.5
    assert all((b - a).days >= 7 for a, b in zip(written, written[1:], strict=False))
    assert all(stages[-1] == "phone_call" for stages in entered.values())


def test_under_formal_notice_no_softer_step_and_no_second_notice() -> None:
    """While a notice runs (through its deadline), the customer's other invoices get no reminder
    and no new notice; the call still goes on. The day after the deadline, they move again."""
    deadline = D + timedelta(days=3)
    contact = CustomerContact(written=tuple(ago(10)), notice_until=deadline,
                              notice_stage="formal_notice")
    members = [
        (i, decide(i, POLICY, D)) for i in (
            facts(1, D - timedelta(days=3)),  # friendly reminder
            facts(2, D + timedelta(days=2)),  # pre-due reminder
            facts(3, D - timedelta(days=15), "second_reminder", D - timedelta(days=5)),  # call
            facts(4, D - timedelta(days=31), "phone_call", D - timedelta(days=16)),  # notice
        )
    ]
    assert [d.stage for _, d in members] == ["friendly_reminder", "pre_due_reminder",
                                             "phone_call", "formal_notice"]
    paced = pace(members, contact, POLICY, D)
    assert [d.stage for _, d in paced] == [None, None, "phone_call", None]
    assert paced[0][1].reason == (f"waiting for friendly_reminder: customer under formal notice "
                                  f"until {deadline}: no friendly_reminder")
    assert paced[3][1].reason.endswith("a new formal notice only after it")
    assert {d.review_on for _, d in paced if d.stage is None} == {deadline + timedelta(days=1)}
    after = deadline + timedelta(days=1)
    later = [(i, decide(i, POLICY, after)) for i, _ in members]
    assert pace(later, contact, POLICY, after) == later


def test_with_the_agency_no_reminder_and_no_notice() -> None:
    contact = CustomerContact(with_agency=True, agency_stage="collection_agency")
    members = [(i, decide(i, POLICY, D)) for i in (
        facts(1, D - timedelta(days=3)),
        facts(4, D - timedelta(days=31), "phone_call", D - timedelta(days=16)))]
    paced = pace(members, contact, POLICY, D)
    assert [d.stage for _, d in paced] == [None, None]
    assert all("its case is with the collection agency" in d.reason for _, d in paced)
    assert {d.review_on for _, d in paced} == {D + timedelta(days=7)}


def test_one_voice_is_the_firmest_email_step() -> None:
    members = [(i, decide(i, POLICY, D)) for i in (
        facts(1, D + timedelta(days=2)),  # pre-due
        facts(2, D - timedelta(days=12), "friendly_reminder", D - timedelta(days=8)),  # second
        facts(3, D - timedelta(days=3)),  # friendly
        facts(4, D - timedelta(days=15), "second_reminder", D - timedelta(days=5)))]  # call
    assert one_voice(members, POLICY) == "second_reminder"
    assert one_voice(members[3:], POLICY) is None
    assert one_voice(members[:1], POLICY) == "pre_due_reminder"
