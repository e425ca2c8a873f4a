"""Collection agency handoff: the case we send (a JSON document whose schema ships in
`schemas/`), the HTTP client that sends it with requests, and the status the agency reports back.

Sending is idempotent on our side: each case carries an `Idempotency-Key` equal to the action's
dedupe key, so a retry after a timeout, a 429 or a 5xx can never open a second case; an agency
that already holds the case answers 409 with its id, which we take as success."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from datetime import date as Date
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dunning import law
from dunning.channels.email import Letter
from dunning.errors import ConfigError, DeliveryError, DunningError
from dunning.policy import Agency, Policy
from dunning.resources import resource_dir
from dunning.settings import secret

log = logging.getLogger("dunning.agency")
SCHEMA_VERSION = "1"
Amount = Annotated[str, Field(pattern=r"^-?\d+\.\d{2}$", description="decimal, two places")]


def amount(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the case we send -------------------------------------------------------------------------


class Party(_Doc):
    name: str
    country: str | None = None
    legal_id: str | None = Field(None, description="SIREN, VAT or company number")
    address: str | None = Field(None, description="postal address, lines separated by \\n")
    email: list[str] = Field(default_factory=list)
    phone: str | None = None


class Creditor(Party):
    iban: str | None = None
    bic: str | None = None


class Debtor(Party):
    customer_id: str = Field(description="the debtor's id in the creditor's accounting system")
    language: str


class CaseInvoice(_Doc):
    invoice_id: str
    number: str
    issue_date: Date | None
    due_date: Date
    currency: str
    amount: Amount
    amount_open: Amount
    days_overdue: int
    interest: Amount = Field(description="statutory late-payment interest to the case date")
    interest_rate: str | None = Field(None, description="annual percent, when one rate applies")
    compensation: Amount = Field(description="fixed recovery compensation for this invoice")
    compensation_currency: str


class Total(_Doc):
    currency: str
    principal: Amount
    interest: Amount
    compensation: Amount
    total: Amount


class HistoryEntry(_Doc):
    date: Date = Field(description="business date")
    at: datetime | None = None
    event: str = Field(description="stage, paused, resumed, settled, reopened, call, message")
    stage: str | None = None
    invoice_id: str | None = None
    description: str
    actor: str


class Document(_Doc):
    kind: Literal["formal_notice"]
    filename: str
    content_type: str
    sent_at: datetime | None = None
    sha256: str
    content_base64: str


class AgencyCase(_Doc):
    """A debt handed to a collection agency."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    reference: str = Field(description="our case reference; also sent as the Idempotency-Key")
    created_on: Date
    law: str = Field(description="the statute interest and compensation are computed under")
    creditor: Creditor
    debtor: Debtor
    invoices: list[CaseInvoice] = Field(min_length=1)
    totals: list[Total]
    history: list[HistoryEntry]
    documents: list[Document]


# --- what the agency says about a case --------------------------------------------------------


class CollectedInvoice(_Doc):
    model_config = ConfigDict(extra="ignore")
    invoice_id: str
    collected: Annotated[str, Field(pattern=r"^\d+(\.\d{1,4})?$")] = Field(
        description="collected so far on this invoice, in its currency (cumulative)")


class CaseStatus(_Doc):
    """The answer to `GET {url}/cases/{id}`."""

    model_config = ConfigDict(extra="ignore")
    id: str
    status: Literal["open", "collected", "unrecoverable"] = Field(
        description="open: at work; collected: closed, paid in full; unrecoverable: closed, the "
                    "agency gave up")
    invoices: list[CollectedInvoice] = Field(default_factory=list)
    note: str | None = Field(None, description="the agency's comment, kept in the history")


def schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas published in `schemas/` (tests check they match the models)."""
    return {"agency-case.schema.json": AgencyCase.model_json_schema(mode="serialization"),
            "agency-case-status.schema.json": CaseStatus.model_json_schema()}


def write_schemas(folder: Path | None = None) -> list[Path]:
    folder = folder or resource_dir("schemas")
    out = []
    for name, schema in schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.append(path)
    return out


# --- building a case --------------------------------------------------------------------------


def build_case(letter: Letter, reference: str, policy: Policy, *, phone: str | None,
               history: list[HistoryEntry], notice: Document | None) -> AgencyCase:
    """The case for the invoices of one agency action, with interest and compensation to the
    business date of the handoff."""
    rule = law.rule_for(policy.law.country or policy.creditor.country)
    invoices: list[CaseInvoice] = []
    sums: dict[str, dict[str, Decimal]] = {}
    for line in letter.lines:
        try:
            result = law.claim(line.amount_open, line.due_date, letter.as_of, rule,
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
        reference=reference, created_on=letter.as_of, law=rule.law,
        creditor=Creditor(name=creditor.name, country=creditor.country,
                          legal_id=creditor.legal_id, address=creditor.address,
                          email=[creditor.email] if creditor.email else [],
                          phone=creditor.phone, iban=creditor.iban, bic=creditor.bic),
        debtor=Debtor(customer_id=letter.customer_ref, name=letter.customer_name,
                      country=letter.country, legal_id=letter.customer_legal_id,
                      address=letter.customer_address, email=list(letter.recipients),
                      phone=phone, language=letter.language),
        invoices=invoices,
        totals=[Total(currency=currency, principal=amount(s["principal"]),
                      interest=amount(s["interest"]), compensation=amount(s["compensation"]),
                      total=amount(sum(s.values(), Decimal(0))))
                for currency, s in sorted(sums.items())],
        history=history,
        documents=[notice] if notice else [],
    )


def notice_document(path: Path, sent_at: datetime | None) -> Document:
    import hashlib

    try:
        content = path.read_bytes()
    except OSError as exc:
        raise DeliveryError(f"the formal notice {path} cannot be read ({exc.strerror}); the case "
                            "is not sent without it") from None
    return Document(kind="formal_notice", filename=path.name, content_type="application/pdf",
                    sent_at=sent_at, sha256=hashlib.sha256(content).hexdigest(),
                    content_base64=base64.b64encode(content).decode("ascii"))


# --- the agency's API -------------------------------------------------------------------------


def _message(response: requests.Response) -> str:
    """The agency's own words about an error, short."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "errors"):
            if body.get(key):
                value = body[key]
                return (value if isinstance(value, str) else json.dumps(value))[:500]
    return json.dumps(body)[:500]


def _case_id(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("id", "case_id"):
            if body.get(key) not in (None, ""):
                return str(body[key])
    return None


class AgencyClient:
    """The agency's HTTP API: `POST {url}/cases` and `GET {url}/cases/{id}`, with a bearer
    token from the environment, a timeout on every request and retries with backoff."""

    def __init__(self, settings: Agency, *, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not settings.url:
            raise ConfigError("agency.url: not set; without an API, hand cases over with "
                              "`dunning agency export --out DIR`")
        token = secret(settings.token_env)
        if not token:
            raise ConfigError(f"agency.token_env: the environment variable {settings.token_env} "
                              "holding the agency's bearer token is not set")
        self.settings = settings
        self.url: str = settings.url
        self.http = session or requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {token}",
                                  "Accept": "application/json",
                                  "User-Agent": "dunning"})
        self.sleep = sleep

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One call, retried on timeouts, connection errors, 429 and 5xx; other answers are
        returned to the caller. Raises a retryable DeliveryError once retries are spent."""
        delay = self.settings.backoff
        problem = ""
        for attempt in range(self.settings.retries + 1):
            if attempt:
                self.sleep(delay)
                delay *= 2
            try:
                response = self.http.request(method, url, timeout=self.settings.timeout,
                                             **kwargs)
            except requests.Timeout:
                problem = f"no answer within {self.settings.timeout:g} s"
            except requests.ConnectionError as exc:
                problem = f"unreachable ({exc.__class__.__name__})"
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                problem = f"answered {response.status_code}: {_message(response)}"
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 300.0))
            log.warning("agency %s %s: %s (attempt %d of %d)", method, url, problem,
                        attempt + 1, self.settings.retries + 1)
        raise DeliveryError(f"agency {method} {url}: {problem} after "
                            f"{self.settings.retries + 1} attempts; retried at the next run")

    def open_case(self, case: AgencyCase, idempotency_key: str) -> str:
        """Send the case; returns the agency's case id."""
        response = self._request(
            "POST", f"{self.url}/cases",
            data=case.model_dump_json(exclude_none=False).encode("utf-8"),
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key})
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code in (200, 201, 409):
            # 409: the agency already holds a case for this key (an earlier attempt got
            # through); its id is all we need.
            case_id = _case_id(body)
            if case_id:
                return case_id
            raise DeliveryError(f"the agency answered {response.status_code} without a case id: "
                                f"{_message(response)}", retryable=False)
        raise DeliveryError(f"the agency refused the case ({response.status_code}): "
                            f"{_message(response)}", retryable=False)

    def case_status(self, case_id: str) -> CaseStatus:
        response = self._request("GET", f"{self.url}/cases/{requests.utils.quote(case_id)}")
        if response.status_code != 200:
            raise DeliveryError(f"agency case {case_id}: {response.status_code} "
                                f"{_message(response)}", retryable=False)
        try:
            return CaseStatus.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise DeliveryError(f"agency case {case_id}: unexpected answer: {exc}",
                                retryable=False) from None
