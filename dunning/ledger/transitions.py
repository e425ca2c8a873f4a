"""The transition log: one row per change of an invoice's stage or state, never updated. Every
writer builds its rows with `transition_row`, so that they all carry the same fields."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from dunning.statuses import InvoiceState, TransitionEvent

SYSTEM = "dunning"  # the actor of the pipeline's own changes


def transition_row(invoice_id: int, event: TransitionEvent, *, from_stage: str | None,
                   to_stage: str | None, state: InvoiceState, on: date, at: datetime, reason: str,
                   actor: str = SYSTEM, detail: str | None = None, run_id: str | None = None,
                   action_id: int | None = None) -> dict[str, Any]:
    """A `transition` row for a bulk insert; `state` is the invoice's state after the change."""
    return {"invoice_id": invoice_id, "event": event, "from_stage": from_stage,
            "to_stage": to_stage, "state": state, "business_date": on, "at": at,
            "reason": reason, "detail": detail, "actor": actor, "run_id": run_id,
            "action_id": action_id}
