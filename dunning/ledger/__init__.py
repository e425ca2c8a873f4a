"""The ledger: our tables brought in line with each snapshot, the ladder's decisions recorded as
transitions and actions, people's approvals. Functions take a session; the caller owns the
transaction (one per unit of work).

    runs         the business date, the checks before a run, each run's row
    reconcile    a snapshot reconciled: new, changed, settled, reopened; pauses that ended
    evaluate     invoices due for review, the ladder's input, its decisions recorded
    approvals    approve or reject a proposed action
    outbox       undelivered actions, and invoices taken out of them
    transitions  the one builder of transition rows
"""

from dunning.db import chunks
from dunning.ledger.approvals import approve, reject
from dunning.ledger.evaluate import (
    NEVER,
    BatchResult,
    dedupe_key,
    evaluate_batch,
    facts_for,
    plan_batches,
    review_cutoff,
    trusts_review_dates,
)
from dunning.ledger.outbox import drop_from_undelivered, forget_customers, forget_review
from dunning.ledger.reconcile import ReconcileResult, reconcile, settlement_history
from dunning.ledger.runs import (
    business_date,
    check_run_date,
    check_stages,
    finish_run,
    forget_run,
    last_run_date,
    mark_crashed,
    start_run,
)
from dunning.ledger.transitions import SYSTEM, transition_row
from dunning.statuses import UNDELIVERED

__all__ = [
    "NEVER", "SYSTEM", "UNDELIVERED", "BatchResult", "ReconcileResult", "approve", "business_date",
    "check_run_date", "check_stages", "chunks", "dedupe_key", "drop_from_undelivered",
    "evaluate_batch", "facts_for", "finish_run", "forget_customers", "forget_review", "forget_run",
    "last_run_date",
    "mark_crashed", "plan_batches", "reconcile", "reject", "review_cutoff", "settlement_history",
    "start_run", "transition_row", "trusts_review_dates",
]
