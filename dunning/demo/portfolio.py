"""The demo portfolio: the sample receivables in `config/sample/` as the accounting system would
export them on each simulated day (invoices appear when issued, payments reduce what is open)."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

from dunning.resources import resource_dir

DEMO_START = date(2026, 10, 1)


def sample_dir() -> Path:
    return resource_dir("config") / "sample"


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_snapshot(day: date, customers_out: Path, invoices_out: Path) -> int:
    """Write the export of `day`; returns the number of invoice rows."""
    sample = sample_dir()
    customers = _read(sample / "customers.csv")
    invoices = _read(sample / "invoices.csv")
    paid: dict[str, Decimal] = defaultdict(Decimal)
    for payment in _read(sample / "payments.csv"):
        if date.fromisoformat(payment["paid_on"]) <= day:
            paid[payment["invoice_id"]] += Decimal(payment["amount"])
    rows = []
    for invoice in invoices:
        if invoice["issue_date"] and date.fromisoformat(invoice["issue_date"]) > day:
            continue
        open_amount = Decimal(invoice["amount_open"]) - paid.get(invoice["invoice_id"], 0)
        if open_amount == 0 and invoice["invoice_id"] in paid:
            continue  # fully paid lines leave the open-items export
        rows.append(invoice | {"amount_open": f"{open_amount:.2f}"})
    for path, data in ((customers_out, customers), (invoices_out, rows)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    return len(rows)
