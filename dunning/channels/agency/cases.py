"""What goes into an agency case: the invoices with interest and compensation to the day of the
handoff, their whole dunning history from the ledger, and the formal notice sent."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, insert, or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning import law
from dunning.channels.agency.models import (
    AgencyCase,
    CaseInvoice,
    Creditor,
    Debtor,
    Document,
    HistoryEntry,
    Total,
    amount,
)
from dunning.channels.letter import REMINDER_LETTER
from dunning.channels.message import Message
from dunning.channels.protocol import Claimed
from dunning.db import transaction
from dunning.errors import DeliveryError, DunningError
from dunning.models import Action, CallOutcome, Invoice, Transition
from dunning.models import AgencyCase as CaseRow
from dunning.policy import Policy
from dunning.statuses import ActionStatus, CaseChannel, CaseStatus


def build_case(message: Message, reference: str, policy: Policy, *, phone: str | None,
               history: list[HistoryEntry], notice: Document | None) -> AgencyCase:
    """The case for the invoices of one agency action, with interest and compensation to the
    business date of the handoff."""
    rule = law.rule_for(policy.law.country or policy.creditor.country)
    invoices: list[CaseInvoice] = []
    sums: dict[str, dict[str, Decimal]] = {}
    for line in message.lines:
        try:
            result = law.claim(line.amount_open, line.due_date, message.as_of, rule,
                               rate=policy.law.rate,
                               compensation=policy.law.compensation).rounded()
        except DunningError as exc:  # e.g. a reference rate not yet in config/rates.yaml
            raise DeliveryError(str(exc)) from None
        rates = {p.rate for p in result.periods}
        invoices.append(CaseInvoice(
            invoice_id=line.invoice_ref or line.number, number=line.number,
            issue_date=line.issue_date, due_date=line.due_date, currency=line.currency,
            amount=amount(line.amount), amount_open=amount(line.amount_open),
            days_overdue=line.days_overdue, interest=amount(result.interest),
            interest_rate=f"{rates.pop():f}" if len(rates) == 1 else None,
            compensation=amount(result.compensation),
            compensation_currency=result.compensation_currency))
        for currency, key, value in ((line.currency, "principal", line.amount_open),
                                     (line.currency, "interest", result.interest),
                                     (result.compensation_currency, "compensation",
                                      result.compensation)):
            bucket = sums.setdefault(currency, {"principal": Decimal(0), "interest": Decimal(0),
                                                "compensation": Decimal(0)})
            bucket[key] += value
    creditor = policy.creditor
    return AgencyCase(
        reference=reference, created_on=message.as_of, law=rule.law,
        creditor=Creditor(name=creditor.name, country=creditor.country,
                          legal_id=creditor.legal_id, address=creditor.address,
                          email=[creditor.email] if creditor.email else [],
                          phone=creditor.phone, iban=creditor.iban, bic=creditor.bic),
        debtor=Debtor(customer_id=message.customer_ref, name=message.customer_name,
                      country=message.country, legal_id=message.customer_legal_id,
                      address=message.customer_address, email=list(message.recipients),
                      phone=phone, language=message.language),
        invoices=invoices,
        totals=[Total(currency=currency, principal=amount(s["principal"]),
                      interest=amount(s["interest"]), compensation=amount(s["compensation"]),
                      total=amount(sum(s.values(), Decimal(0))))
                for currency, s in sorted(sums.items())],
        history=history,
        documents=[notice] if notice else [],
    )


def notice_document(path: Path, sent_at: datetime | None) -> Document:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise DeliveryError(f"the formal notice {path} cannot be read ({exc.strerror}); the case "
                            "is not sent without it") from None
    return Document(kind="formal_notice", filename=path.name, content_type="application/pdf",
                    sent_at=sent_at, sha256=hashlib.sha256(content).hexdigest(),
                    content_base64=base64.b64encode(content).decode("ascii"))


_CHANNEL_WORDS = {"email": "email", "letter": "formal notice", "phone": "call task",
                  "agency": "collection agency case", "injunction": "injunction file"}


def case_reference(message: Message, action_id: int) -> str:
    return f"{message.customer_ref}-{action_id:06d}"


def history(session: Session, customer_id: int, invoice_refs: Sequence[str]) -> \
        list[HistoryEntry]:
    """Everything that happened to these invoices and their customer, oldest first: each
    transition, each message or task delivered, each call outcome."""
    entries: list[HistoryEntry] = []
    for transition, ref in session.execute(
        select(Transition, col(Invoice.external_id))
        .join(Invoice, col(Invoice.id) == col(Transition.invoice_id))
        .where(col(Invoice.external_id).in_(list(invoice_refs)))
        .order_by(col(Transition.business_date), col(Transition.id))
    ):
        text = transition.reason + (f" ({transition.detail})" if transition.detail else "")
        entries.append(HistoryEntry(date=transition.business_date, at=transition.at,
                                    event=transition.event, stage=transition.to_stage,
                                    invoice_id=ref, description=text, actor=transition.actor))
    for action in session.execute(
        select(Action).where(col(Action.customer_id) == customer_id,
                             col(Action.status) == ActionStatus.SENT)
        .order_by(col(Action.business_date), col(Action.id))
    ).scalars():
        what = ("reminder letter" if action.template == REMINDER_LETTER
                else _CHANNEL_WORDS.get(action.kind, action.kind))
        via = f" ({action.provider_id})" if action.provider_id else ""
        entries.append(HistoryEntry(
            date=action.business_date, at=action.sent_at, event="message"
            if action.kind in ("email", "letter") else action.kind, stage=action.stage,
            description=f"{what} '{action.stage}' delivered{via}", actor="dunning"))
    for outcome, stage in session.execute(
        select(CallOutcome, col(Action.stage))
        .join(Action, col(Action.id) == col(CallOutcome.action_id))
        .where(col(Action.customer_id) == customer_id)
        .order_by(col(CallOutcome.business_date), col(CallOutcome.id))
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
        .where(col(Action.customer_id) == customer_id, col(Action.kind) == "letter",
               col(Action.status) == ActionStatus.SENT, col(Action.document).is_not(None),
               or_(col(Action.template).is_(None), col(Action.template) != REMINDER_LETTER))
        .order_by(col(Action.sent_at).desc(), col(Action.id).desc()).limit(1)
    ).scalars().first()


class CaseBuilder:
    """Builds the case of an agency action from the ledger."""

    def __init__(self, engine: Engine, policy: Policy) -> None:
        self.engine = engine
        self.policy = policy

    def case(self, action_id: int, action: Claimed, message: Message) -> AgencyCase:
        with transaction(self.engine) as session:
            entries = history(session, action.customer_id, [line.invoice_ref
                                                             for line in message.lines])
            notice = latest_notice(session, action.customer_id)
            found = (Path(notice.document or ""), notice.sent_at) if notice else None
        document = notice_document(*found) if found else None
        return build_case(message, case_reference(message, action_id), self.policy,
                          phone=message.customer_phone, history=entries, notice=document)

    @staticmethod
    def record(action: Claimed, action_id: int, reference: str, channel: CaseChannel,
               as_of: date, agency_case_id: str | None) -> Callable[[Session], None]:
        def after(session: Session) -> None:
            session.execute(insert(CaseRow).values(
                action_id=action_id, customer_id=action.customer_id, reference=reference,
                agency_case_id=agency_case_id, channel=channel, status=CaseStatus.OPEN,
                opened_on=as_of, collected=Decimal(0)))
        return after
