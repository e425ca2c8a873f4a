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
- A customer under a formal notice (until its deadline) or whose case is with the collection
  agency hears no softer step for its other invoices (no pre-due, friendly or second reminder):
  they wait until the notice's deadline has passed, or the case is closed.
- One open formal notice per customer: a new one (for invoices the open one does not cover)
  only after the open one's deadline.
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
class CustomerContact:
    """What the ledger knows of a customer's contact, for pace()."""

    written: tuple[date, ...] = ()  # the days of its written messages so far
    notice_until: date | None = None  # the deadline of its latest formal notice, if any
    notice_stage: str | None = None  # that notice's stage
    with_agency: bool = False  # a case of its is open at the collection agency
    agency_stage: str | None = None


AGENCY_RECHECK = timedelta(days=7)  # a customer with the agency: its reminders looked at again


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


def _firm(contact: CustomerContact, policy: Policy, as_of: date
          ) -> tuple[int, str, date | None] | None:
    """The firm step the customer is under, as (its stage's index, what it is, the first day
    it no longer holds softer steps back: None while the agency holds the case)."""
    if contact.with_agency and contact.agency_stage is not None:
        return (policy.stage_index(contact.agency_stage),
                "its case is with the collection agency", None)
    if contact.notice_until is not None and contact.notice_until >= as_of \
            and contact.notice_stage is not None:
        return (policy.stage_index(contact.notice_stage),
                f"under formal notice until {contact.notice_until}",
                contact.notice_until + timedelta(days=1))
    return None


def pace(members: Sequence[tuple[InvoiceFacts, Decision]], contact: CustomerContact,
         policy: Policy, as_of: date) -> list[tuple[InvoiceFacts, Decision]]:
    """The decisions of one customer's invoices, with the steps the customer must not receive
    today turned into waits (the reason, and the day to look again as review date):
    a softer step while the customer is under a formal notice or with the agency; a second
    formal notice while one is open; a written message the cadence forbids."""
    cadence = policy.contact
    firm = _firm(contact, policy, as_of)
    when: Opening | None = None
    out: list[tuple[InvoiceFacts, Decision]] = []
    for invoice, decision in members:
        if decision.stage is None:
            out.append((invoice, decision))
            continue
        stage = policy.stage(decision.stage)
        held: tuple[str, date] | None = None
        if firm is not None and stage.channel in WRITTEN:
            index, what, until = firm
            if policy.stage_index(stage.name) < index:
                held = (f"customer {what}: no {stage.name}", until or as_of + AGENCY_RECHECK)
            elif stage.channel == "letter" and until is not None:
                held = (f"customer {what}: a new formal notice only after it", until)
        if held is None and paced(stage.channel, stage.requires_approval):
            if when is None:
                when = opening(contact.written, as_of, cadence.min_days_between,
                               cadence.max_per_month)
            if when.on > as_of:
                held = (when.reason, when.on)
        if held is not None:
            decision = Decision(decision.invoice_id, None,
                                f"waiting for {decision.stage}: {held[0]}",
                                decision.days_overdue, held[1])
        out.append((invoice, decision))
    return out


def one_voice(members: Sequence[tuple[InvoiceFacts, Decision]], policy: Policy) -> str | None:
    """The stage of the customer's one email of the day: the firmest of the email steps its
    invoices take today (None: no email). Steps that wait for approval keep their own action."""
    firmest: int | None = None
    for _, decision in members:
        if decision.stage is None:
            continue
        stage = policy.stage(decision.stage)
        if stage.channel == "email" and not stage.requires_approval:
            index = policy.stage_index(stage.name)
            firmest = index if firmest is None else max(firmest, index)
    return None if firmest is None else policy.stages[firmest].name
