"""The escalation ladder: given an invoice as plain values, the policy and the business date,
say which stage it enters now, or why it waits. Pure: no session, no clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
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


@dataclass(frozen=True, slots=True)
class Decision:
    """The next stage to enter (None: stay), with the reason a credit manager reads."""

    invoice_id: int
    stage: str | None
    reason: str
    days_overdue: int

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


def decide(invoice: InvoiceFacts, policy: Policy, as_of: date) -> Decision:
    """The stage `invoice` enters on `as_of`, or why it does not move."""
    days_overdue = (as_of - invoice.due_date).days

    def stay(reason: str) -> Decision:
        return Decision(invoice.invoice_id, None, reason, days_overdue)

    if invoice.state == "closed":
        return stay("closed: nothing to chase")
    if invoice.state == "paused":
        return stay("paused: dunning is suspended")
    if invoice.hold_until is not None and invoice.hold_until >= as_of:
        return stay(f"customer on hold until {invoice.hold_until}")
    if invoice.amount < 0:
        return stay("credit note: never dunned")
    if invoice.amount_open <= 0:
        return stay("nothing open")

    if invoice.stage is not None and invoice.stage_entered_on is not None:
        since = (as_of - invoice.stage_entered_on).days
        if since < 1:
            # Reruns of a day, and approvals recorded on it, never move an invoice twice.
            return stay(f"{invoice.stage} entered {_days(since)} ago: one stage per day at most")

    stages = policy.stages
    current = policy.stage_index(invoice.stage)
    if invoice.stage is not None and current < 0:
        return stay(f"its stage {invoice.stage} is not in the policy: a person decides")
    candidate = current + 1
    # Reminders before the due date only make sense while the invoice is not yet due.
    while candidate < len(stages) and stages[candidate].days_after_due < 0 and days_overdue >= 0:
        candidate += 1
    if candidate >= len(stages):
        where = invoice.stage or "the ladder"
        return stay(f"at the last stage ({where})")
    stage = stages[candidate]

    if stage.name in invoice.rejected_stages:
        return stay(f"{stage.name} was rejected; escalation stops here until a person acts")
    if invoice.pending_stage == stage.name:
        return stay(f"{stage.name} awaits approval")

    reasons: list[str] = []
    ok, text = _lateness(days_overdue, stage)
    if not ok:
        return stay(f"waiting for {stage.name}: {text}")
    reasons.append(text)

    previous = stages[current] if current >= 0 else None
    if previous is not None and invoice.stage_entered_on is not None:
        since = (as_of - invoice.stage_entered_on).days
        if since < stage.min_days_since_previous:
            return stay(
                f"waiting for {stage.name}: {previous.name} entered {_days(since)} ago "
                f"< {stage.min_days_since_previous}"
            )
        if stage.min_days_since_previous > 0:
            reasons.append(
                f"{previous.name} entered {_days(since)} ago ≥ {stage.min_days_since_previous}"
            )

    if stage.min_amount > 0:
        currency = invoice.currency or policy.currency
        if currency != policy.currency:
            # No exchange rate is guessed: a threshold in EUR says nothing of a JPY invoice.
            return stay(f"waiting for {stage.name}: its minimum is in {policy.currency}, the "
                        f"invoice in {currency}: a person decides")
        if invoice.amount_open < stage.min_amount:
            return stay(
                f"waiting for {stage.name}: open {_money(invoice.amount_open)} "
                f"< {_money(stage.min_amount)}"
            )
        reasons.append(f"open {_money(invoice.amount_open)} ≥ {_money(stage.min_amount)}")

    return Decision(invoice.invoice_id, stage.name, "; ".join(reasons), days_overdue)
