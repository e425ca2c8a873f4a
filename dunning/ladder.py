"""The escalation ladder: given an invoice as plain values, the policy and the business date,
say which stage it enters now, or why it waits, and from which date that answer may change.
Pure: no session, no clock, no I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from dunning.policy import Policy, Stage


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    """What the ladder needs to know about one invoice."""

    invoice_id: int
    customer_id: int
    due_date: date
    amount: Decimal
    amount_open: Decimal
    stage: str | None = None
    stage_entered_on: date | None = None
    state: str = "active"
    rejected_stages: frozenset[str] = field(default_factory=frozenset)
    pending_stage: str | None = None  # a stage proposed and waiting for approval
    hold_until: date | None = None  # the customer is on hold through this date
    currency: str | None = None  # None: the policy's currency
    # The stage's message: the date it reached the customer (None: on the day it was entered),
    # or why it has not (dunning/ledger/delivery.py); a held invoice stays at its stage.
    delivered_on: date | None = None
    held: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The next stage to enter (None: stay), with the reason a credit manager reads."""

    invoice_id: int
    stage: str | None
    reason: str
    days_overdue: int
    # The first date on which decide() may answer otherwise for the same facts; None: never
    # while they stay as they are (only a payment, a pause, an approval... can move it).
    review_on: date | None = None

    @property
    def enters(self) -> bool:
        return self.stage is not None


def _days(n: int) -> str:
    return f"{n} day" if abs(n) == 1 else f"{n} days"


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _lateness(days_overdue: int, stage: Stage) -> tuple[bool, str]:
    if stage.days_after_due < 0:
        window = -stage.days_after_due
        ok = days_overdue >= stage.days_after_due
        until = -days_overdue
        return ok, f"due in {_days(until)} {'≤' if ok else '>'} {window}"
    ok = days_overdue >= stage.days_after_due
    return ok, f"{_days(days_overdue)} overdue {'≥' if ok else '<'} {stage.days_after_due}"


def _earliest(*days: date | None) -> date | None:
    known = [day for day in days if day is not None]
    return min(known) if known else None


def decide(invoice: InvoiceFacts, policy: Policy, as_of: date, explain: bool = True) -> Decision:
    """The stage `invoice` enters on `as_of`, or why it does not move (and until when).
    `explain=False` leaves the reason empty (the same answer, without formatting a sentence:
    what looking ahead for the next review date needs)."""
    days_overdue = (as_of - invoice.due_date).days

    def stay(reason: str, review_on: date | None) -> Decision:
        return Decision(invoice.invoice_id, None, reason, days_overdue, review_on)

    if invoice.state == "closed":
        return stay("closed: nothing to chase", None)
    if invoice.state == "paused":
        return stay("paused: dunning is suspended", None)
    if invoice.hold_until is not None and invoice.hold_until >= as_of:
        return stay(f"customer on hold until {invoice.hold_until}" if explain else "",
                    invoice.hold_until + timedelta(days=1))
    if invoice.amount < 0:
        return stay("credit note: never dunned", None)
    if invoice.amount_open <= 0:
        return stay("nothing open", None)

    if invoice.stage is not None and invoice.stage_entered_on is not None:
        since = (as_of - invoice.stage_entered_on).days
        if since < 1:
            # Reruns of a day, and approvals recorded on it, never move an invoice twice.
            return stay(f"{invoice.stage} entered {_days(since)} ago: one stage per day at most"
                        if explain else "",
                        invoice.stage_entered_on + timedelta(days=1))

    if invoice.stage is not None and invoice.held is not None:
        # Looked at again every day: a delivery event, a posting, a call or a person lifts it.
        return stay(f"held at {invoice.stage}: {invoice.held}" if explain else "",
                    as_of + timedelta(days=1))

    stages = policy.stages
    current = policy.stage_index(invoice.stage)
    if invoice.stage is not None and current < 0:
        return stay(f"its stage {invoice.stage} is not in the policy: a person decides"
                    if explain else "", None)
    candidate = current + 1
    # From the due date on, the pre-due reminders ahead are passed over: the stage waited for,
    # and so the answer, may change that day whatever else holds it.
    turns = (invoice.due_date if days_overdue < 0 and candidate < len(stages)
             and stages[candidate].days_after_due < 0 else None)
    # Reminders before the due date only make sense while the invoice is not yet due.
    while candidate < len(stages) and stages[candidate].days_after_due < 0 and days_overdue >= 0:
        candidate += 1
    if candidate >= len(stages):
        where = invoice.stage or "the ladder"
        return stay(f"at the last stage ({where})" if explain else "", turns)
    stage = stages[candidate]

    if stage.name in invoice.rejected_stages:
        return stay(f"{stage.name} was rejected; escalation stops here until a person acts"
                    if explain else "", turns)
    if invoice.pending_stage == stage.name:
        return stay(f"{stage.name} awaits approval" if explain else "", turns)

    reasons: list[str] = []
    if days_overdue < stage.days_after_due:
        late_enough = invoice.due_date + timedelta(days=stage.days_after_due)
        return stay(f"waiting for {stage.name}: {_lateness(days_overdue, stage)[1]}"
                    if explain else "", _earliest(late_enough, turns))
    if explain:
        reasons.append(_lateness(days_overdue, stage)[1])

    previous = stages[current] if current >= 0 else None
    # Spacing counts from the day the previous stage reached the customer.
    reached = invoice.delivered_on or invoice.stage_entered_on
    if previous is not None and reached is not None:
        since = (as_of - reached).days
        verb = "entered" if reached == invoice.stage_entered_on else "delivered"
        if since < stage.min_days_since_previous:
            return stay(
                f"waiting for {stage.name}: {previous.name} {verb} {_days(since)} ago "
                f"< {stage.min_days_since_previous}" if explain else "",
                _earliest(reached + timedelta(days=stage.min_days_since_previous), turns),
            )
        if stage.min_days_since_previous > 0 and explain:
            reasons.append(
                f"{previous.name} {verb} {_days(since)} ago ≥ {stage.min_days_since_previous}"
            )

    if stage.min_amount > 0:
        currency = invoice.currency or policy.currency
        if currency != policy.currency:
            # No exchange rate is guessed: a threshold in EUR says nothing of a JPY invoice.
            return stay(f"waiting for {stage.name}: its minimum is in {policy.currency}, the "
                        f"invoice in {currency}: a person decides" if explain else "", turns)
        if invoice.amount_open < stage.min_amount:
            return stay(
                f"waiting for {stage.name}: open {_money(invoice.amount_open)} "
                f"< {_money(stage.min_amount)}" if explain else "",
                turns,
            )
        if explain:
            reasons.append(f"open {_money(invoice.amount_open)} ≥ {_money(stage.min_amount)}")

    # Were it not recorded, the same facts would enter the stage again tomorrow.
    return Decision(invoice.invoice_id, stage.name, "; ".join(reasons), days_overdue,
                    as_of + timedelta(days=1))


def first_move(invoice: InvoiceFacts, policy: Policy, start: date) -> date | None:
    """The first date from `start` on which decide() moves `invoice` (enters or proposes a
    stage) with the same facts; None: never while they stay as they are."""
    held = invoice.stage is not None and invoice.held is not None
    day = start
    # Each answer holds until its review date, and there are a few kinds of answer per stage.
    for _ in range(4 * len(policy.stages) + 4):
        decision = decide(invoice, policy, day, explain=False)
        if decision.enters:
            return day
        if decision.review_on is None:
            return None
        if held and decision.review_on == day + timedelta(days=1):
            return day  # held (or its stage entered today): looked at again every day
        day = decision.review_on
    return day  # an earlier date is safe: it only costs an evaluation


def review_after(invoice: InvoiceFacts, decision: Decision, policy: Policy,
                 as_of: date) -> date | None:
    """The first date after `as_of` on which the ladder may move `invoice` once `decision`,
    taken on `as_of`, is recorded (a stage entered, or proposed for approval); None: never
    while the facts stay as they are."""
    tomorrow = as_of + timedelta(days=1)
    if decision.stage is None:
        # The same answer until its review date: no need to ask for the days before it.
        return first_move(invoice, policy, decision.review_on) if decision.review_on else None
    if policy.stage(decision.stage).requires_approval:
        if invoice.pending_stage not in (None, decision.stage):
            # Two proposals waiting at once: which one the ledger reads first is not ours to
            # guess, so it is looked at again tomorrow.
            return tomorrow
        after = _moved(invoice, invoice.stage, invoice.stage_entered_on, decision.stage,
                       invoice.delivered_on, invoice.held)
    else:
        # A new stage: its message goes out today (were it held, the next day's run sees it).
        after = _moved(invoice, decision.stage, as_of, invoice.pending_stage, None, None)
    return first_move(after, policy, tomorrow)


def _moved(invoice: InvoiceFacts, stage: str | None, entered: date | None,
           pending: str | None, delivered_on: date | None, held: str | None) -> InvoiceFacts:
    """The invoice with another stage or proposal (`dataclasses.replace` costs more than the
    decision itself, once per invoice of a full evaluation)."""
    return InvoiceFacts(invoice.invoice_id, invoice.customer_id, invoice.due_date,
                        invoice.amount, invoice.amount_open, stage, entered, invoice.state,
                        invoice.rejected_stages, pending, invoice.hold_until, invoice.currency,
                        delivered_on, held)


def fingerprint(policy: Policy) -> str:
    """A digest of what decide() reads from the policy, and the contact rules that pace its
    decisions (dunning/contact.py): review dates computed under another fingerprint mean
    nothing."""
    ladder = {
        "currency": policy.currency,
        "contact": [policy.contact.min_days_between, policy.contact.max_per_month,
                    policy.letters.deadline_days],
        "stages": [[s.name, s.days_after_due, s.min_days_since_previous,
                    format(s.min_amount.normalize(), "f"), s.requires_approval]
                   for s in policy.stages],
    }
    text = json.dumps(ladder, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
