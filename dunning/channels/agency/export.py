"""Agency cases as files, for agencies without an API: a JSON file per case (the API's schema,
notice PDF included) and `cases.csv`, one row per invoice of every case in the folder."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import Engine

from dunning import spreadsheet
from dunning.channels.agency.cases import CaseBuilder
from dunning.channels.agency.models import AgencyCase
from dunning.channels.message import Message
from dunning.channels.protocol import Claimed, Delivered
from dunning.dispatch import DispatchResult, dispatch
from dunning.errors import ConfigError
from dunning.files import safe_name, write_atomically
from dunning.policy import Policy
from dunning.statuses import CaseChannel


class ExportChannel(CaseBuilder):
    """Writes each approved case as `<reference>.json` (and its notice PDF) in a folder, for
    agencies without an API."""

    kind = "agency"

    def __init__(self, engine: Engine, policy: Policy, folder: Path, as_of: date) -> None:
        super().__init__(engine, policy)
        self.folder = folder
        self.as_of = as_of
        self.written: list[Path] = []

    def deliver(self, action_id: int, action: Claimed, message: Message) -> Delivered:
        case = self.case(action_id, action, message)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{safe_name(case.reference)}.json"
        write_atomically(path, case.model_dump_json(indent=2).encode("utf-8"))
        self.written.append(path)
        return Delivered(provider_id=f"export:{path.name}", document=str(path),
                         after=self.record(action, action_id, case.reference,
                                           CaseChannel.EXPORT, self.as_of, None))


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


def export(engine: Engine, policy: Policy, folder: Path, as_of: date) -> \
        tuple[DispatchResult, list[Path], list[str]]:
    """Write the approved cases not yet handed over as JSON files and `cases.csv`; returns
    what was dispatched, the files written, and the folder's other `.json` files, left alone."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"export folder {folder}: not a folder; nothing was exported")
    channel = ExportChannel(engine, policy, folder, as_of)
    result = dispatch(engine, policy, channel, as_of, kind="agency")
    skipped: list[str] = []
    if channel.written or folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _, skipped = write_csv(folder)
    return result, channel.written, skipped
