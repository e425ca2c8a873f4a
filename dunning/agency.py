"""Collection agency handoff, on the ledger's side: what goes into a case (the invoices, their
whole dunning history, the formal notice), sending it or exporting it as files, and applying
what the agency reports back (`sync`): collections reduce or close invoices, a case closed as
unrecoverable puts its invoices up for write-off review."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from dunning import spreadsheet
from dunning.channels.agency import (
    AgencyCase,
    AgencyClient,
    CaseStatus,
    HistoryEntry,
    build_case,
    notice_document,
)
from dunning.channels.email import Letter
from dunning.db import transaction
from dunning.dispatch import Claimed, Delivered, DispatchResult, dispatch
from dunning.errors import ConfigError, DeliveryError
from dunning.files import safe_name, write_atomically
from dunning.ledger import drop_from_undelivered, transition_row
from dunning.models import (
    Action,
    ActionInvoice,
    CallOutcome,
    Invoice,
    Transition,
    utcnow,
)
from dunning.models import (
    AgencyCase as CaseRow,
)
from dunning.pauses import pause
from dunning.policy import Policy
from dunning.shards import Shard, in_shard

log = logging.getLogger("dunning.agency")
AGENCY = "agency"  # the actor of what the agency reports
_CHANNEL_WORDS = {"email": "email", "letter": "formal notice", "phone": "call task",
                  "agency": "collection agency case", "injunction": "injunction file"}


def case_reference(letter: Letter, action_id: int) -> str:
    return f"{letter.customer_ref}-{action_id:06d}"


def history(session: Session, customer_id: int, invoice_refs: Sequence[str]) -> \
        list[HistoryEntry]:
    """Everything that happened to these invoices and their customer, oldest first: each
    transition, each message or task delivered, each call outcome."""
    entries: list[HistoryEntry] = []
    for transition, ref in session.execute(
        select(Transition, Invoice.external_id)
        .join(Invoice, Invoice.id == Transition.invoice_id)
        .where(Invoice.external_id.in_(list(invoice_refs)))
        .order_by(Transition.business_date, Transition.id)
    ):
        text = transition.reason + (f" ({transition.detail})" if transition.detail else "")
        entries.append(HistoryEntry(date=transition.business_date, at=transition.at,
                                    event=transition.event, stage=transition.to_stage,
                                    invoice_id=ref, description=text, actor=transition.actor))
    for action in session.execute(
        select(Action).where(Action.customer_id == customer_id, Action.status == "sent")
        .order_by(Action.business_date, Action.id)
    ).scalars():
        what = _CHANNEL_WORDS.get(action.kind, action.kind)
        via = f" ({action.provider_id})" if action.provider_id else ""
        entries.append(HistoryEntry(
            date=action.business_date, at=action.sent_at, event="message"
            if action.kind in ("email", "letter") else action.kind, stage=action.stage,
            description=f"{what} '{action.stage}' delivered{via}", actor="dunning"))
    for outcome, stage in session.execute(
        select(CallOutcome, Action.stage).join(Action, Action.id == CallOutcome.action_id)
        .where(Action.customer_id == customer_id)
        .order_by(CallOutcome.business_date, CallOutcome.id)
    ):
        parts = [f"call outcome: {outcome.outcome.replace('_', ' ')}"]
        if outcome.until:
            parts.append(f"until {outcome.until}")
        if outcome.amount is not None:
            parts.append(f"amount {outcome.amount}")
        if outcome.note:
            parts.append(outcome.note)
        entries.append(HistoryEntry(date=outcome.business_date, at=outcome.at, event="call",
                                    stage=stage, description=", ".join(parts),
                                    actor=outcome.by))
    entries.sort(key=lambda e: (e.date, e.at.timestamp() if e.at else 0.0))
    return entries


def latest_notice(session: Session, customer_id: int) -> Action | None:
    """The last formal notice delivered to this customer (its `document` is the PDF)."""
    return session.execute(
        select(Action)
        .where(Action.customer_id == customer_id, Action.kind == "letter",
               Action.status == "sent", Action.document.is_not(None))
        .order_by(Action.sent_at.desc(), Action.id.desc()).limit(1)
    ).scalars().first()


class CaseBuilder:
    """Builds the case of an agency action from the ledger."""

    def __init__(self, engine: Engine, policy: Policy) -> None:
        self.engine = engine
        self.policy = policy

    def case(self, action_id: int, action: Claimed, letter: Letter) -> AgencyCase:
        with transaction(self.engine) as session:
            entries = history(session, action.customer_id, [line.invoice_ref
                                                             for line in letter.lines])
            notice = latest_notice(session, action.customer_id)
            found = (Path(notice.document or ""), notice.sent_at) if notice else None
        document = notice_document(*found) if found else None
        return build_case(letter, case_reference(letter, action_id), self.policy,
                          phone=letter.customer_phone, history=entries, notice=document)

    @staticmethod
    def record(action: Claimed, action_id: int, reference: str, channel: str, as_of: date,
               agency_case_id: str | None) -> Any:
        def after(session: Session) -> None:
            session.execute(insert(CaseRow).values(
                action_id=action_id, customer_id=action.customer_id, reference=reference,
                agency_case_id=agency_case_id, channel=channel, status="open", opened_on=as_of,
                collected=Decimal(0)))
        return after


class ApiChannel(CaseBuilder):
    """Sends each approved case to the agency's API."""

    kind = "agency"

    def __init__(self, engine: Engine, policy: Policy, client: AgencyClient,
                 as_of: date) -> None:
        super().__init__(engine, policy)
        self.client = client
        self.as_of = as_of

    def deliver(self, action_id: int, action: Claimed, letter: Letter) -> Delivered:
        case = self.case(action_id, action, letter)
        case_id = self.client.open_case(case, action.dedupe_key)
        return Delivered(provider_id=f"agency:{case_id}",
                         after=self.record(action, action_id, case.reference, "api",
                                           self.as_of, case_id))


class ExportChannel(CaseBuilder):
    """Writes each approved case as `<reference>.json` (and its notice PDF) in a folder, for
    agencies without an API."""

    kind = "agency"

    def __init__(self, engine: Engine, policy: Policy, folder: Path, as_of: date) -> None:
        super().__init__(engine, policy)
        self.folder = folder
        self.as_of = as_of
        self.written: list[Path] = []

    def deliver(self, action_id: int, action: Claimed, letter: Letter) -> Delivered:
        case = self.case(action_id, action, letter)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{safe_name(case.reference)}.json"
        write_atomically(path, case.model_dump_json(indent=2).encode("utf-8"))
        self.written.append(path)
        return Delivered(provider_id=f"export:{path.name}", document=str(path),
                         after=self.record(action, action_id, case.reference, "export",
                                           self.as_of, None))


CSV_COLUMNS = ("reference", "created_on", "customer_id", "debtor", "legal_id", "country",
               "email", "phone", "invoice_id", "number", "issue_date", "due_date", "currency",
               "amount", "amount_open", "days_overdue", "interest", "compensation",
               "compensation_currency")


def write_csv(folder: Path) -> tuple[Path, list[str]]:
    """`cases.csv`: one row per invoice of every case in the folder, rebuilt from the JSON
    files, so that it always lists exactly the cases the folder holds. Returns it, and a line
    for each other `.json` file, left alone (a folder shared with other files is fine)."""
    rows = []
    skipped: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            case = AgencyCase.model_validate_json(path.read_bytes())
        except OSError as exc:
            skipped.append(f"{path}: cannot be read ({exc.strerror}); left out of cases.csv")
            continue
        except ValidationError:
            skipped.append(f"{path}: not an agency case written by dunning; left out of "
                           "cases.csv")
            continue
        for invoice in case.invoices:
            rows.append([
                case.reference, case.created_on.isoformat(), case.debtor.customer_id,
                case.debtor.name, case.debtor.legal_id or "", case.debtor.country or "",
                ";".join(case.debtor.email), case.debtor.phone or "", invoice.invoice_id,
                invoice.number, invoice.issue_date.isoformat() if invoice.issue_date else "",
                invoice.due_date.isoformat(), invoice.currency, invoice.amount,
                invoice.amount_open, invoice.days_overdue, invoice.interest,
                invoice.compensation, invoice.compensation_currency,
            ])
    out = folder / "cases.csv"
    tmp = out.with_name("cases.csv.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = spreadsheet.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, out)
    return out, skipped


def send(engine: Engine, policy: Policy, as_of: date, *, client: AgencyClient | None = None,
         dry_run: bool = False, shard: Shard | None = None) -> DispatchResult:
    """Send approved agency cases to the agency's API. Without `agency.url` cases wait for
    `dunning agency export`."""
    if dry_run or policy.agency is None or not policy.agency.url:
        return dispatch(engine, policy, None, as_of, kind="agency", dry_run=True, shard=shard)
    channel = ApiChannel(engine, policy, client or AgencyClient(policy.agency), as_of)
    return dispatch(engine, policy, channel, as_of, kind="agency", shard=shard)


def export(engine: Engine, policy: Policy, folder: Path, as_of: date) -> \
        tuple[DispatchResult, list[Path], list[str]]:
    """Write the approved cases not yet handed over as JSON files and `cases.csv`; returns
    what was dispatched, the files written, and the folder's other `.json` files, left alone."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder}: not a folder; nothing was exported")
    channel = ExportChannel(engine, policy, folder, as_of)
    result = dispatch(engine, policy, channel, as_of, kind="agency")
    skipped: list[str] = []
    if channel.written or folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _, skipped = write_csv(folder)
    return result, channel.written, skipped


# --- what the agency reports ------------------------------------------------------------------


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
            select(CaseRow.id, CaseRow.agency_case_id)
            .where(CaseRow.status == "open", CaseRow.channel == "api",
                   *in_shard(CaseRow.customer_id, shard))
            .order_by(CaseRow.id)).all())
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


def apply_status(session: Session, row_id: int, status: CaseStatus, as_of: date,
                 run_id: str | None, result: SyncResult) -> bool:
    """Apply what the agency says about one case; returns whether anything changed."""
    case = session.execute(select(CaseRow).where(CaseRow.id == row_id).with_for_update()
                           ).scalar_one()
    invoices = {invoice.external_id: invoice for invoice in session.execute(
        select(Invoice).join(ActionInvoice, ActionInvoice.invoice_id == Invoice.id)
        .where(ActionInvoice.action_id == case.action_id,
               ActionInvoice.dropped_reason.is_(None))
        .with_for_update(of=Invoice)).scalars()}
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
        transitions.append(transition_row(
            invoice.id, "collected", from_stage=invoice.stage,  # type: ignore[arg-type]
            to_stage=invoice.stage, state="closed" if open_after == 0 else invoice.state,
            on=as_of, at=now, reason="collected by the agency",
            detail=f"case {status.id}: {news:.2f} {invoice.currency} collected, "
                   f"{collected:.2f} in all; {open_after:.2f} still open",
            actor=AGENCY, run_id=run_id, action_id=case.action_id))
        if open_after == 0 and invoice.state != "closed":
            values |= {"state": "closed", "state_reason": "settled", "closed_on": as_of}
            transitions.append(transition_row(
                invoice.id, "settled", from_stage=invoice.stage,  # type: ignore[arg-type]
                to_stage=invoice.stage, state="closed", on=as_of, at=now, reason="settled",
                detail=f"collected in full by the agency (case {status.id})",
                actor=AGENCY, run_id=run_id, action_id=case.action_id))
            closing.append(invoice.id)  # type: ignore[arg-type]
        session.execute(update(Invoice).where(Invoice.id == invoice.id).values(**values))
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
    if status.status != "open":
        case_values |= {"status": status.status, "closed_on": as_of}
        result.cases_closed += 1
        changed = True
    if status.status == "unrecoverable":
        still_open = [invoice for invoice in invoices.values() if invoice.state != "closed"
                      and invoice.id not in closing]
        for invoice in still_open:
            session.refresh(invoice)
        result.write_off_review += pause(
            session, still_open, "write_off_review", None, by=AGENCY,
            reason=f"agency case {status.id} closed as unrecoverable"
                   + (f": {status.note}" if status.note else "") + "; review for write-off",
            on=as_of, action_id=case.action_id)
    session.execute(update(CaseRow).where(CaseRow.id == row_id).values(**case_values))
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
            select(CaseRow, Customer.external_id)
            .join(Customer, Customer.id == CaseRow.customer_id)
            .order_by(CaseRow.id.desc()))
    ]
