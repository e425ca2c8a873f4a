"""The collection agency's documents: the case we send (a JSON document whose schema ships in
`schemas/`) and the status the agency reports back, as pydantic models, and their JSON Schemas."""

from __future__ import annotations

import json
from datetime import date as Date
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from dunning.resources import resource_dir

SCHEMA_VERSION: Final = "1"
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
