"""What the agency reports back, applied to the ledger: collections reduce or close invoices, a
case closed as unrecoverable puts its invoices up for write-off review."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.channels.agency.client import AgencyClient
from dunning.channels.agency.models import CaseStatus as StatusReport
from dunning.coltypes import utcnow
from dunning.db import transaction
from dunning.errors import DeliveryError
from dunning.ledger import drop_from_undelivered, forget_customers, transition_row
from dunning.models import ActionInvoice, Invoice, Transition
from dunning.models import AgencyCase as CaseRow
from dunning.pauses import pause
from dunning.policy import Policy
from dunning.shards import Shard, in_shard
from dunning.statuses import CaseChannel, CaseStatus, InvoiceState, TransitionEvent

log = logging.getLogger("dunning.agency")
AGENCY = "agency"  # the actor of what the agency reports


@dataclass
class SyncResult:
    cases: int = 0  # asked about
    updated: int = 0  # with news: money collected, or the case closed
    collected: dict[str, Decimal] = field(default_factory=dict)  # newly collected, by currency
    closed: int = 0  # invoices closed by collection
    write_off_review: int = 0  # invoices put up for write-off review
    cases_closed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "updated": self.updated,
                "collected": {k: f"{v:.2f}" for k, v in sorted(self.collected.items())},
                "invoices_closed": self.closed, "write_off_review": self.write_off_review,
                "cases_closed": self.cases_closed, "errors": self.errors}


def sync(engine: Engine, policy: Policy, as_of: date, *, client: AgencyClient | None = None,
         run_id: str | None = None, shard: Shard | None = None) -> SyncResult:
    """Ask the agency about every open case and apply the answers, one transaction per case. A
    case the agency cannot answer for is reported and left as it was."""
    result = SyncResult()
    if policy.agency is None or not policy.agency.url:
        return result
    with transaction(engine) as session:
        cases = list(session.execute(
            select(col(CaseRow.id), col(CaseRow.agency_case_id))
            .where(col(CaseRow.status) == CaseStatus.OPEN,
                   col(CaseRow.channel) == CaseChannel.API,
                   *in_shard(col(CaseRow.customer_id), shard))
            .order_by(col(CaseRow.id))).all())
    if not cases:
        return result
    client = client or AgencyClient(policy.agency)
    for row_id, agency_case_id in cases:
        result.cases += 1
        try:
            status = client.case_status(agency_case_id)
        except DeliveryError as exc:
            result.errors.append({"case": agency_case_id, "error": str(exc)})
            log.warning("agency case %s: %s", agency_case_id, exc)
            continue
        try:
            with transaction(engine) as session:
                if apply_status(session, row_id, status, as_of, run_id, result):
                    result.updated += 1
        except ValueError as exc:
            result.errors.append({"case": agency_case_id, "error": str(exc)})
            log.warning("agency case %s: %s", agency_case_id, exc)
    return result


def apply_status(session: Session, row_id: int, status: StatusReport, as_of: date,
                 run_id: str | None, result: SyncResult) -> bool:
    """Apply what the agency says about one case; returns whether anything changed."""
    case = session.execute(select(CaseRow).where(col(CaseRow.id) == row_id).with_for_update()
                           ).scalar_one()
    invoices = {invoice.external_id: invoice for invoice in session.execute(
        select(Invoice).join(ActionInvoice, col(ActionInvoice.invoice_id) == col(Invoice.id))
        .where(col(ActionInvoice.action_id) == case.action_id,
               col(ActionInvoice.dropped_reason).is_(None))
        .with_for_update(of=Invoice)).scalars()}
    reported = CaseStatus(status.status)
    now = utcnow()
    changed = False
    transitions: list[dict[str, Any]] = []
    closing: list[int] = []
    total = Decimal(0)
    for item in status.invoices:
        invoice = invoices.get(item.invoice_id)
        if invoice is None:
            raise ValueError(f"the agency reports invoice {item.invoice_id!r}, which is not in "
                             f"case {case.reference}; nothing applied for this case")
        try:
            collected = Decimal(item.collected)
        except InvalidOperation:
            raise ValueError(f"invoice {item.invoice_id}: collected {item.collected!r} is not "
                             "an amount") from None
        total += collected
        before = invoice.agency_collected or Decimal(0)
        news = collected - before
        if news <= 0:
            continue  # nothing new (a lower figure is a correction on their side: kept as was)
        open_after = max(Decimal(0), invoice.amount_open - news)
        values: dict[str, Any] = {"agency_collected": collected, "amount_open": open_after,
                                  "updated_at": now, "review_on": None}
        result.collected[invoice.currency] = result.collected.get(invoice.currency,
                                                                  Decimal(0)) + news
        invoice_id = invoice.id
        assert invoice_id is not None  # loaded from the database
        transitions.append(transition_row(
            invoice_id, TransitionEvent.COLLECTED, from_stage=invoice.stage,
            to_stage=invoice.stage,
            state=InvoiceState.CLOSED if open_after == 0 else invoice.state,
            on=as_of, at=now, reason="collected by the agency",
            detail=f"case {status.id}: {news:.2f} {invoice.currency} collected, "
                   f"{collected:.2f} in all; {open_after:.2f} still open",
            actor=AGENCY, run_id=run_id, action_id=case.action_id))
        if open_after == 0 and invoice.state != InvoiceState.CLOSED:
            values |= {"state": InvoiceState.CLOSED, "state_reason": "settled",
                       "closed_on": as_of}
            transitions.append(transition_row(
                invoice_id, TransitionEvent.SETTLED, from_stage=invoice.stage,
                to_stage=invoice.stage, state=InvoiceState.CLOSED, on=as_of, at=now,
                reason="settled", detail=f"collected in full by the agency (case {status.id})",
                actor=AGENCY, run_id=run_id, action_id=case.action_id))
            closing.append(invoice_id)
        session.execute(update(Invoice).where(col(Invoice.id) == invoice_id).values(**values))
        changed = True
    if transitions:
        session.execute(insert(Transition), transitions)
    if closing:
        drop_from_undelivered(session, closing, f"collected by the agency on {as_of}", now)
        result.closed += len(closing)
    word = status.status + (f": {status.note}" if status.note else "")
    case_values: dict[str, Any] = {"synced_at": now, "agency_status": word[:1000]}
    if status.invoices:
        case_values["collected"] = total
    if reported != CaseStatus.OPEN:
        case_values |= {"status": reported, "closed_on": as_of}
        result.cases_closed += 1
        changed = True
        # The case no longer holds the customer's other invoices back (dunning/contact.py).
        forget_customers(session, [case.customer_id])
    if reported == CaseStatus.UNRECOVERABLE:
        still_open = [invoice for invoice in invoices.values()
                      if invoice.state != InvoiceState.CLOSED and invoice.id not in closing]
        for invoice in still_open:
            session.refresh(invoice)
        result.write_off_review += pause(
            session, still_open, "write_off_review", None, by=AGENCY,
            reason=f"agency case {status.id} closed as unrecoverable"
                   + (f": {status.note}" if status.note else "") + "; review for write-off",
            on=as_of, action_id=case.action_id)
    session.execute(update(CaseRow).where(col(CaseRow.id) == row_id).values(**case_values))
    return changed


def open_cases(session: Session) -> list[dict[str, Any]]:
    """Cases handed over, newest first, for `dunning agency sync --json` and the report."""
    from dunning.models import Customer

    return [
        {"reference": case.reference, "agency_case_id": case.agency_case_id,
         "customer_id": ref, "channel": case.channel, "status": case.status,
         "opened_on": case.opened_on.isoformat(),
         "closed_on": case.closed_on.isoformat() if case.closed_on else None,
         "collected": f"{case.collected:.2f}", "agency_status": case.agency_status,
         "action_id": case.action_id}
        for case, ref in session.execute(
            select(CaseRow, col(Customer.external_id))
            .join(Customer, col(Customer.id) == col(CaseRow.customer_id))
            .order_by(col(CaseRow.id).desc()))
    ]
