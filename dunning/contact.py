"""One voice per customer: when a customer may next be written to (the contact cadence), and which
of the ladder's decisions for its invoices go out today as one message.

The ladder (dunning/ladder.py) decides invoice by invoice; this step, right after it, looks at the
customer. Pure, like the ladder: plain values in, plain values out, no session and no clock.

- A *written message* is an email or a letter that goes out without a person asking for it. A
  step a person asked for (an approved formal notice, a confirmation) is exempt: it is never held
  back, but it counts as contact for the messages after it.
- Two written messages to a customer are at least `min_days_between` calendar days apart, and a
  customer receives at most `max_per_month` of them in a calendar month.
- An invoice whose next step would break the cadence waits, with the reason, until the first day
  the customer may be written to again: then every invoice due a step that day goes out in the
  same message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from dunning.ladder import Decision, InvoiceFacts
from dunning.policy import Policy

# The channels that write to the customer. A call is a person's conversation; an agency case and
# a court file are handovers to third parties.
WRITTEN = frozenset({"email", "letter"})


@dataclass(frozen=True, slots=True)
class Opening:
    """The first day a customer may be written to, and, when later than asked, why."""

    on: date
    reason: str = ""


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def opening(written: Iterable[date], as_of: date, min_days_between: int,
            max_per_month: int) -> Opening:
    """The first day from `as_of` on which a message may go to a customer written to on the days
    `written` (business dates; a day may appear once per message)."""
    days = sorted(day for day in written if day <= as_of)
    if not days:
        return Opening(as_of)
    last = days[-1]
    since = (as_of - last).days
    # Nothing twice in a day, whatever min_days_between says (0 allows a message a day).
    gap = max(min_days_between, 1)
    on, reason = as_of, ""
    if since < gap:
        on = last + timedelta(days=gap)
        reason = (f"customer written to {_days(since)} ago < {min_days_between}" if since
                  else "customer already written to today")
    month = [day for day in days if (day.year, day.month) == (on.year, on.month)]
    if len(month) >= max_per_month:
        why = f"{len(month)} messages to the customer this month ≥ {max_per_month}"
        on, reason = _next_month(on), f"{reason}; {why}" if reason else why
    return Opening(on, reason)


def paced(stage_channel: str, requires_approval: bool) -> bool:
    """Whether a stage's step waits for the customer's cadence: a written message that goes out
    by itself. A proposal is not a message (it waits for a person, who is never held back)."""
    return stage_channel in WRITTEN and not requires_approval


def pace(members: Sequence[tuple[InvoiceFacts, Decision]], written: Iterable[date],
         policy: Policy, as_of: date) -> list[tuple[InvoiceFacts, Decision]]:
    """The decisions of one customer's invoices, those whose step would write to the customer
    when the cadence forbids it turned into waits (reason, and the opening as review date).
    `written`: the days of the customer's written messages so far."""
    contact = policy.contact
    when: Opening | None = None
    out: list[tuple[InvoiceFacts, Decision]] = []
    for invoice, decision in members:
        if decision.stage is not None:
            stage = policy.stage(decision.stage)
            if paced(stage.channel, stage.requires_approval):
                if when is None:
                    when = opening(written, as_of, contact.min_days_between,
                                   contact.max_per_month)
                if when.on > as_of:
                    decision = Decision(decision.invoice_id, None,
                                        f"waiting for {decision.stage}: {when.reason}",
                                        decision.days_overdue, when.on)
        out.append((invoice, decision))
    return out
