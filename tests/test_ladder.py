"""The ladder's rules, one row each, and its invariants under random invoices."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.ladder import Decision, InvoiceFacts, decide, fingerprint, review_after
from dunning.policy import Policy, load_policy

REPO = Path(__file__).resolve().parents[1]
POLICY = load_policy(REPO / "config" / "policy.yaml")
AS_OF = date(2026, 11, 23)
STAGES = [s.name for s in POLICY.stages]


def facts(days_overdue: int, *, stage: str | None = None, entered_days_ago: int | None = None,
          amount: str = "1000", amount_open: str | None = None, state: str = "active",
          rejected: frozenset[str] = frozenset(), pending: str | None = None,
          currency: str | None = None, hold_days: int | None = None) -> InvoiceFacts:
    return InvoiceFacts(
        invoice_id=1, customer_id=1, due_date=AS_OF - timedelta(days=days_overdue),
        amount=Decimal(amount), amount_open=Decimal(amount_open or amount), stage=stage,
        stage_entered_on=None if entered_days_ago is None else AS_OF - timedelta(
            days=entered_days_ago),
        state=state, rejected_stages=rejected, pending_stage=pending, currency=currency,
        hold_until=None if hold_days is None else AS_OF + timedelta(days=hold_days),
    )


CASES = [
    # (id, invoice, expected stage, words the reason must contain)
    ("6 days before due: nothing yet", facts(-6), None, "waiting for pre_due_reminder"),
    ("5 days before due: pre-due reminder", facts(-5), "pre_due_reminder", "due in 5 days ≤ 5"),
    ("1 day before due: pre-due reminder", facts(-1), "pre_due_reminder", "due in 1 day"),
    ("due today: pre-due passed over, waits for friendly", facts(0), None,
     "waiting for friendly_reminder: 0 days overdue < 3"),
    ("2 days overdue, no stage: waits", facts(2), None, "2 days overdue < 3"),
    ("3 days overdue, no stage: friendly", facts(3), "friendly_reminder", "3 days overdue ≥ 3"),
    ("after pre-due, 3 days overdue: friendly", facts(3, stage="pre_due_reminder",
                                                     entered_days_ago=8),
     "friendly_reminder", "3 days overdue ≥ 3"),
    ("90 days overdue, no stage: only the friendly reminder", facts(90), "friendly_reminder",
     "90 days overdue ≥ 3"),
    ("second reminder too soon after friendly", facts(12, stage="friendly_reminder",
                                                      entered_days_ago=6),
     None, "friendly_reminder entered 6 days ago < 7"),
    ("second reminder after 7 days", facts(12, stage="friendly_reminder", entered_days_ago=7),
     "second_reminder", "12 days overdue ≥ 10; friendly_reminder entered 7 days ago ≥ 7"),
    ("phone call at 15 days", facts(15, stage="second_reminder", entered_days_ago=5),
     "phone_call", "15 days overdue ≥ 15"),
    ("formal notice at 31 days, phone 16 days ago", facts(31, stage="phone_call",
                                                          entered_days_ago=16),
     "formal_notice", "31 days overdue ≥ 30; phone_call entered 16 days ago ≥ 7"),
    ("formal notice awaiting approval is not proposed twice",
     facts(31, stage="phone_call", entered_days_ago=16, pending="formal_notice"), None,
     "formal_notice awaits approval"),
    ("rejected formal notice: escalation stops",
     facts(45, stage="phone_call", entered_days_ago=30, rejected=frozenset({"formal_notice"})),
     None, "formal_notice was rejected"),
    ("agency below its minimum waits", facts(70, stage="formal_notice", entered_days_ago=20,
                                             amount="400"),
     None, "open 400.00 < 500.00"),
    ("agency above its minimum", facts(70, stage="formal_notice", entered_days_ago=20,
                                       amount="800"),
     "collection_agency", "open 800.00 ≥ 500.00"),
    ("partial payment counts the open amount", facts(70, stage="formal_notice",
                                                     entered_days_ago=20, amount="2000",
                                                     amount_open="450"),
     None, "open 450.00 < 500.00"),
    ("agency minimum in EUR says nothing of a JPY invoice",
     facts(70, stage="formal_notice", entered_days_ago=20, amount="150000", currency="JPY"),
     None, "its minimum is in EUR, the invoice in JPY"),
    ("a stage without a minimum applies in any currency",
     facts(3, amount="150000", currency="JPY"), "friendly_reminder", "3 days overdue ≥ 3"),
    ("a stage the policy no longer has: a person decides",
     facts(45, stage="mise_en_demeure", entered_days_ago=10), None,
     "its stage mise_en_demeure is not in the policy"),
    ("last stage: nothing more", facts(200, stage="injunction", entered_days_ago=50), None,
     "at the last stage"),
    ("entered a stage today: never a second one the same day",
     facts(40, stage="friendly_reminder", entered_days_ago=0), None, "entered 0 days ago"),
    ("closed invoice is never dunned", facts(40, state="closed"), None, "closed"),
    ("paused invoice is never dunned", facts(40, state="paused"), None, "paused"),
    ("credit note is never dunned", facts(40, amount="-300"), None, "credit note"),
    ("nothing open", facts(40, amount_open="0"), None, "nothing open"),
]


@pytest.mark.parametrize(("invoice", "stage", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_decide(invoice: InvoiceFacts, stage: str | None, reason: str) -> None:
    decision = decide(invoice, POLICY, AS_OF)
    assert decision.stage == stage
    assert reason in decision.reason
    assert decision.days_overdue == (AS_OF - invoice.due_date).days


def test_a_held_stage_stays_and_spacing_counts_from_delivery() -> None:
    sent_late = replace(facts(40, stage="second_reminder", entered_days_ago=12),
                        delivered_on=AS_OF - timedelta(days=3))
    decision = decide(sent_late, POLICY, AS_OF)
    assert decision.stage is None
    assert decision.reason == "waiting for phone_call: second_reminder delivered 3 days ago < 5"
    assert decision.review_on == AS_OF + timedelta(days=2)
    assert decide(replace(sent_late, delivered_on=None), POLICY, AS_OF).stage == "phone_call"
    held = replace(sent_late, held="its second_reminder email (action 7) bounced")
    decision = decide(held, POLICY, AS_OF + timedelta(days=30))
    assert (decision.stage, decision.reason) == (
        None, "held at second_reminder: its second_reminder email (action 7) bounced")
    assert decision.review_on == AS_OF + timedelta(days=31)
    assert review_after(held, decision, POLICY, AS_OF + timedelta(days=30)) == (
        AS_OF + timedelta(days=31))
    # a hold says nothing before the stage's day is over, nor of an invoice without a stage
    assert decide(replace(held, stage_entered_on=AS_OF), POLICY, AS_OF).reason.startswith(
        "second_reminder entered 0 days ago")
    assert decide(replace(facts(5), held="x"), POLICY, AS_OF).stage == "friendly_reminder"


def test_a_zero_day_gap_still_waits_until_the_next_run() -> None:
    data = POLICY.model_dump(by_alias=True)
    for stage in data["stages"]:
        stage["min_days_since_previous"] = 0
    policy = Policy.model_validate(data)
    decision = decide(facts(40, stage="friendly_reminder", entered_days_ago=0), policy, AS_OF)
    assert decision.stage is None
    moved = decide(facts(40, stage="friendly_reminder", entered_days_ago=1), policy, AS_OF)
    assert moved.stage == "second_reminder"


invoices = st.builds(
    facts,
    days_overdue=st.integers(-60, 400),
    stage=st.sampled_from([None, *STAGES]),
    entered_days_ago=st.integers(0, 120),
    amount=st.decimals(-5000, 50000, places=2, allow_nan=False,
                       allow_infinity=False).map(str),
    state=st.sampled_from(["active", "active", "active", "paused", "closed"]),
    rejected=st.frozensets(st.sampled_from(STAGES), max_size=2),
    pending=st.sampled_from([None, *STAGES]),
)


@settings(max_examples=400, deadline=None)
@given(invoices)
def test_at_most_one_stage_and_never_a_skipped_post_due_stage(invoice: InvoiceFacts) -> None:
    decision = decide(invoice, POLICY, AS_OF)
    if decision.stage is None:
        return
    current = POLICY.stage_index(invoice.stage)
    target = POLICY.stage_index(decision.stage)
    assert target > current
    skipped = POLICY.stages[current + 1:target]
    # Only reminders before the due date may be passed over, and only once it is due.
    assert all(s.days_after_due < 0 for s in skipped)
    assert not skipped or decision.days_overdue >= 0
    assert decision.stage not in invoice.rejected_stages
    assert decision.stage != invoice.pending_stage


@settings(max_examples=300, deadline=None)
@given(invoices)
def test_closed_paused_credit_notes_and_settled_invoices_never_move(invoice: InvoiceFacts) -> None:
    decision = decide(invoice, POLICY, AS_OF)
    if invoice.state != "active" or invoice.amount < 0 or invoice.amount_open <= 0:
        assert decision.stage is None


@settings(max_examples=300, deadline=None)
@given(invoices, st.integers(0, 30))
def test_a_stage_once_entered_respects_its_thresholds(invoice: InvoiceFacts, _: int) -> None:
    decision = decide(invoice, POLICY, AS_OF)
    if decision.stage is None:
        return
    stage = POLICY.stage(decision.stage)
    assert decision.days_overdue >= stage.days_after_due
    assert invoice.amount_open >= stage.min_amount
    if stage.days_after_due < 0:
        assert decision.days_overdue < 0
    if invoice.stage is not None and invoice.stage_entered_on is not None:
        assert (AS_OF - invoice.stage_entered_on).days >= max(stage.min_days_since_previous, 1)


# --- review dates -----------------------------------------------------------------------------


def days_after(n: int) -> date:
    return AS_OF + timedelta(days=n)


REVIEWS = [
    # (id, invoice, days from AS_OF to the review date; None: not while the facts stay)
    ("6 days before due: the pre-due reminder tomorrow", facts(-6), 1),
    ("20 days before due: the pre-due reminder 5 days before due", facts(-20), 15),
    ("due today: the friendly reminder at 3 days overdue", facts(0), 3),
    ("pre-due sent, 2 days before due: friendly at 3 days overdue",
     facts(-2, stage="pre_due_reminder", entered_days_ago=3), 5),
    ("pre-due rejected before due: the day it falls due, when it is passed over",
     facts(-3, rejected=frozenset({"pre_due_reminder"})), 3),
    ("pre-due awaiting approval: the day it falls due",
     facts(-2, pending="pre_due_reminder"), 2),
    ("second reminder waits for 7 days after friendly", facts(12, stage="friendly_reminder",
                                                              entered_days_ago=6), 1),
    ("second reminder waits for 10 days overdue", facts(5, stage="friendly_reminder",
                                                        entered_days_ago=2), 5),
    ("entered today: tomorrow at the earliest", facts(40, stage="friendly_reminder",
                                                       entered_days_ago=0), 1),
    ("customer on hold through day 4: day 5", facts(40, hold_days=4), 5),
    ("customer on hold through today: tomorrow", facts(40, hold_days=0), 1),
    ("entering a stage: with the same facts, again tomorrow", facts(3), 1),
    ("formal notice awaiting approval", facts(31, stage="phone_call", entered_days_ago=16,
                                              pending="formal_notice"), None),
    ("formal notice rejected", facts(45, stage="phone_call", entered_days_ago=30,
                                     rejected=frozenset({"formal_notice"})), None),
    ("agency below its minimum", facts(70, stage="formal_notice", entered_days_ago=20,
                                       amount="400"), None),
    ("agency minimum in another currency", facts(70, stage="formal_notice",
                                                 entered_days_ago=20, amount="150000",
                                                 currency="JPY"), None),
    ("last stage", facts(200, stage="injunction", entered_days_ago=50), None),
    ("stage not in the policy", facts(45, stage="mise_en_demeure", entered_days_ago=10), None),
    ("credit note", facts(40, amount="-300"), None),
    ("nothing open", facts(40, amount_open="0"), None),
    ("closed", facts(40, state="closed"), None),
    ("paused", facts(40, state="paused"), None),
]


@pytest.mark.parametrize(("invoice", "days"), [c[1:] for c in REVIEWS],
                         ids=[c[0] for c in REVIEWS])
def test_review_date(invoice: InvoiceFacts, days: int | None) -> None:
    assert decide(invoice, POLICY, AS_OF).review_on == (None if days is None else days_after(days))


def test_the_stored_review_date_is_the_first_day_the_ladder_may_move() -> None:
    rejected = facts(-3, rejected=frozenset({"pre_due_reminder"}))
    decision = decide(rejected, POLICY, AS_OF)
    assert decision.review_on == days_after(3)  # due: the answer changes...
    assert review_after(rejected, decision, POLICY, AS_OF) == days_after(6)  # ...friendly then
    held = facts(1, hold_days=4)
    assert review_after(held, decide(held, POLICY, AS_OF), POLICY, AS_OF) == days_after(5)
    assert review_after(facts(31, stage="phone_call", entered_days_ago=16,
                              pending="formal_notice"),
                        decide(facts(31, stage="phone_call", entered_days_ago=16,
                                     pending="formal_notice"), POLICY, AS_OF),
                        POLICY, AS_OF) is None


def test_after_entering_a_stage_the_review_is_when_the_next_one_may_apply() -> None:
    invoice = facts(3)  # enters the friendly reminder today
    decision = decide(invoice, POLICY, AS_OF)
    assert decision.stage == "friendly_reminder"
    # second_reminder: 10 days overdue (in 7 days) and 7 days after friendly (in 7 days)
    assert review_after(invoice, decision, POLICY, AS_OF) == days_after(7)
    late = facts(40)
    decision = decide(late, POLICY, AS_OF)
    assert review_after(late, decision, POLICY, AS_OF) == days_after(7)
    # A proposal waits for its approval: only a person changes that.
    notice = facts(31, stage="phone_call", entered_days_ago=16)
    decision = decide(notice, POLICY, AS_OF)
    assert decision.stage == "formal_notice"
    assert review_after(notice, decision, POLICY, AS_OF) is None


def test_the_fingerprint_follows_what_decide_reads() -> None:
    data = POLICY.model_dump(by_alias=True)
    same = Policy.model_validate(data | {"language": "en", "payment_days": 30})
    assert fingerprint(same) == fingerprint(POLICY)
    for change in ({"currency": "USD"},
                   {"stages": [dict(s, days_after_due=s["days_after_due"] + 1)
                               for s in data["stages"]]},
                   {"stages": data["stages"][:-1]}):
        assert fingerprint(Policy.model_validate(data | change)) != fingerprint(POLICY)
    data["stages"][-1]["min_amount"] = "1000.00"  # the same amount written otherwise
    assert fingerprint(Policy.model_validate(data)) == fingerprint(POLICY)


def answer(decision: Decision) -> tuple[str | None, str]:
    """What a decision says, leaving out the figures that change every day."""
    return decision.stage, re.sub(r"-?\d[\d,.]*|\b(days|day)\b", "#", decision.reason)


@st.composite
def ladders(draw: st.DrawFn) -> Policy:
    """Random ladders: pre-due stages, thresholds, gaps, minimums, approvals."""
    offsets = sorted(draw(st.lists(st.integers(-12, 70), min_size=1, max_size=6)))
    stages = [{"name": f"s{n}", "channel": "email", "days_after_due": offset,
               "min_days_since_previous": draw(st.integers(0, 20)),
               "min_amount": draw(st.sampled_from(["0", "500", "1000"])),
               "requires_approval": draw(st.booleans())}
              for n, offset in enumerate(offsets)]
    return Policy.model_validate(POLICY.model_dump(by_alias=True) | {"stages": stages})


@st.composite
def situations(draw: st.DrawFn) -> tuple[Policy, InvoiceFacts]:
    policy = draw(ladders())
    names = [s.name for s in policy.stages]
    stage = draw(st.sampled_from([None, None, *names, "gone"]))
    invoice = facts(
        draw(st.integers(-30, 150)), stage=stage,
        entered_days_ago=None if stage is None else draw(st.integers(-1, 40)),
        amount=draw(st.sampled_from(["-50", "300", "800", "5000"])),
        state=draw(st.sampled_from(["active", "active", "active", "paused", "closed"])),
        rejected=draw(st.frozensets(st.sampled_from(names), max_size=2)),
        pending=draw(st.sampled_from([None, None, *names])),
        currency=draw(st.sampled_from([None, None, "JPY"])),
        hold_days=draw(st.sampled_from([None, None, -3, 0, 6])),
    )
    # The stage's message: delivered on the day it was entered, days later, or held
    entered = invoice.stage_entered_on
    late = draw(st.sampled_from([None, None, 0, 3, 9]))
    delivered_on = entered + timedelta(days=late) if entered and late is not None else None
    held = draw(st.sampled_from([None, None, None, "its email bounced"]))
    return policy, replace(invoice, amount_open=min(invoice.amount, draw(
        st.sampled_from([invoice.amount, Decimal("0"), Decimal("450")]))),
        delivered_on=delivered_on, held=held)


HORIZON = 200  # days looked at when the answer should never change


@settings(max_examples=500, deadline=None)
@given(situations())
def test_the_answer_holds_until_the_review_date(case: tuple[Policy, InvoiceFacts]) -> None:
    """Every day before the review date decide() answers the same; on it, something differs
    (the answer, or a later review date)."""
    policy, invoice = case
    decision = decide(invoice, policy, AS_OF)
    review = decision.review_on
    assert review is None or review > AS_OF
    last = review - timedelta(days=1) if review else days_after(HORIZON)
    day = AS_OF + timedelta(days=1)
    while day <= last:
        later = decide(invoice, policy, day)
        assert answer(later) == answer(decision), day
        assert later.review_on == review, day
        day += timedelta(days=1)
    if review is not None:
        then = decide(invoice, policy, review)
        assert answer(then) != answer(decision) or (
            then.review_on is None or then.review_on > review)


@settings(max_examples=500, deadline=None)
@given(situations())
def test_the_ladder_moves_an_invoice_first_on_its_review_date(
        case: tuple[Policy, InvoiceFacts]) -> None:
    """Once today's decision is recorded (a stage entered or proposed, or nothing), the ladder
    does not move the invoice before the review date it is given (a rerun of the day
    neither), and moves it on that date."""
    policy, invoice = case
    decision = decide(invoice, policy, AS_OF)
    review = review_after(invoice, decision, policy, AS_OF)
    after = invoice
    if decision.stage is not None and policy.stage(decision.stage).requires_approval:
        after = replace(invoice, pending_stage=decision.stage)
    elif decision.stage is not None:
        after = replace(invoice, stage=decision.stage, stage_entered_on=AS_OF,
                        delivered_on=None, held=None)
    assert review is None or review > AS_OF
    last = review - timedelta(days=1) if review else days_after(HORIZON)
    day = AS_OF if decision.stage is not None else AS_OF + timedelta(days=1)
    while day <= last:
        assert decide(after, policy, day).stage is None, day
        day += timedelta(days=1)
    # (Proposing a stage while another waits is looked at again the next day, to be safe.)
    # (A held invoice is looked at again every day: a delivery may lift its hold.)
    if review is not None and not (after.held and after.stage) and (
            decision.stage is None or invoice.pending_stage in (None, decision.stage)):
        assert decide(after, policy, review).enters
