"""One voice per customer, the ledger's side: what it knows of each customer's contact (the days
it was written to, its open formal notice, its case at the agency), read for a batch, so that
dunning/contact.py can pace the ladder's decisions customer by customer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from datetime import date, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.contact import WRITTEN, CustomerContact, pace
from dunning.db import chunks
from dunning.ladder import Decision, InvoiceFacts
from dunning.models import Action, AgencyCase
from dunning.policy import Policy
from dunning.statuses import ActionStatus, CaseStatus

# A message counts from the moment it is decided: queued, approved or being sent, it goes out at
# the next dispatch; failed, it is retried. Cancelled and rejected ones never went out; a
# proposal waiting for approval is not a message yet.
_COUNTED = (ActionStatus.QUEUED, ActionStatus.APPROVED, ActionStatus.SENDING, ActionStatus.SENT,
            ActionStatus.FAILED)
NO_CONTACT = CustomerContact()
_UNDELIVERED_AGENCY = (ActionStatus.QUEUED, ActionStatus.APPROVED, ActionStatus.SENDING,
                       ActionStatus.FAILED)


def paced_by_customer(session: Session, decided: Sequence[tuple[InvoiceFacts, Decision]],
                      policy: Policy, as_of: date
                      ) -> Iterator[tuple[int, list[tuple[InvoiceFacts, Decision]]]]:
    """The ladder's decisions customer by customer (in the order customers first appear), each
    customer's paced by what it was told (dunning/contact.py); only the customers with a step
    to take have their contact read."""
    by_customer: dict[int, list[tuple[InvoiceFacts, Decision]]] = {}
    for pair in decided:
        by_customer.setdefault(pair[0].customer_id, []).append(pair)
    moving = {customer_id for customer_id, members in by_customer.items()
              if any(decision.stage is not None for _, decision in members)}
    known = contacts(session, moving, as_of, policy)
    for customer_id, members in by_customer.items():
        if customer_id in moving:
            members = pace(members, known.get(customer_id, NO_CONTACT), policy, as_of)
        yield customer_id, members


def contacts(session: Session, customer_ids: Collection[int], as_of: date,
             policy: Policy) -> dict[int, CustomerContact]:
    """The contact of each customer of `customer_ids` that has any (the others: none)."""
    if not customer_ids:
        return {}
    # What can still hold a step back on `as_of`: a message within the cadence's reach (its
    # gap, its calendar month), a notice within its deadline.
    reach = max(policy.contact.min_days_between, 31, policy.letters.deadline_days) + 1
    since = as_of - timedelta(days=reach)
    written: dict[int, list[date]] = defaultdict(list)
    notice: dict[int, tuple[date, str]] = {}
    agency: dict[int, str] = {}
    letter_stages = {s.name for s in policy.stages if s.channel == "letter"}
    agency_stage = next((s.name for s in policy.stages if s.channel == "agency"), None)
    deadline = timedelta(days=policy.letters.deadline_days)
    for batch in chunks(sorted(customer_ids)):
        for customer_id, kind, stage, status, decided, attempted in session.execute(
            select(col(Action.customer_id), col(Action.kind), col(Action.stage),
                   col(Action.status), col(Action.business_date), col(Action.attempted_on))
            .where(col(Action.customer_id).in_(batch), col(Action.kind).in_(WRITTEN),
                   col(Action.status).in_(_COUNTED),
                   or_(col(Action.business_date) >= since, col(Action.attempted_on) >= since,
                       col(Action.status) == ActionStatus.APPROVED))
        ):
            # Sent (or tried) on the day of its attempt; queued, on the day it was decided (the
            # day's dispatch sends it); approved by a person since, it goes out today.
            day = attempted or (as_of if status == ActionStatus.APPROVED else decided)
            if day < since:
                continue
            written[customer_id].append(day)
            if kind == "letter" and stage in letter_stages:
                # Not delivered yet (approved, failed and retried...): it holds from today.
                until = (day if status == ActionStatus.SENT else max(day, as_of)) + deadline
                if customer_id not in notice or notice[customer_id][0] < until:
                    notice[customer_id] = (until, stage)
        if agency_stage is not None:
            for (customer_id,) in session.execute(
                select(col(AgencyCase.customer_id))
                .where(col(AgencyCase.customer_id).in_(batch),
                       col(AgencyCase.status) == CaseStatus.OPEN)
                .union(select(col(Action.customer_id))
                       .where(col(Action.customer_id).in_(batch), col(Action.kind) == "agency",
                              col(Action.status).in_(_UNDELIVERED_AGENCY)))
            ):
                agency[customer_id] = agency_stage
    out: dict[int, CustomerContact] = {}
    for customer_id in set(written) | set(notice) | set(agency):
        open_notice = notice.get(customer_id)
        out[customer_id] = CustomerContact(
            written=tuple(sorted(written.get(customer_id, ()))),
            notice_until=open_notice[0] if open_notice else None,
            notice_stage=open_notice[1] if open_notice else None,
            with_agency=customer_id in agency,
            agency_stage=agency.get(customer_id))
    return out
