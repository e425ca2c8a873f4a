"""The daily run as plain functions: the Prefect tasks in `tasks/` call these, and tests can too.

    pull -> reconcile -> evaluate (batches) -> dispatch -> report
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning import ledger, runlock
from dunning.channels.email import transport
from dunning.channels.outbox import Outbox
from dunning.channels.sendgrid import SendGrid
from dunning.context import Context, load_context
from dunning.db import transaction
from dunning.delivery_events import settle_reported
from dunning.dispatch import Dispatcher, DispatchResult, waiting_by_channel
from dunning.dispatch import dispatch as deliver
from dunning.errors import DunningError
from dunning.ledger import BatchResult, ReconcileResult
from dunning.models import Action, Run
from dunning.posting import awaiting_post
from dunning.recovery import RecoveryResult, recover
from dunning.shards import Shard, in_shard
from dunning.sources import Snapshot, stage
from dunning.staging import Staged
from dunning.staging import drop as drop_staged
from dunning.statuses import READY, RunStatus

__all__ = ["Context", "load_context"]


def pull_snapshot(ctx: Context, shard: Shard | None = None) -> Staged:
    """The snapshot, staged in the database (for a shard: only its customers and their
    invoices are valid rows). `reconcile` or `simulate` drops the staging table."""
    return stage(ctx.policy, ctx.policy_path, ctx.engine, shard)


def check_date(ctx: Context, as_of: date, shard: Shard | None = None) -> None:
    """Before anything: time does not go backwards, and the ledger's stages are the policy's."""
    with transaction(ctx.engine) as session:
        ledger.check_run_date(session, as_of, shard)
        ledger.check_stages(session, {stage.name for stage in ctx.policy.stages})


def run_lock(ctx: Context, shard: Shard | None = None) -> AbstractContextManager[None]:
    """The shard's run lock (`dunning.runlock`), for the whole of a real run."""
    return runlock.held(ctx.engine, shard)


def check_no_run_in_progress(ctx: Context, shard: Shard | None = None) -> None:
    """Refuse at once while a run of the shard is in progress, naming it."""
    runlock.check_free(ctx.engine, shard)


def start(ctx: Context, run_id: str, as_of: date, shard: Shard | None = None) -> \
        tuple[list[dict[str, str]], RecoveryResult]:
    """Under the run lock: mark the shard's runs left `running` as crashed (their process
    died: it no longer holds the lock), settle the claims nobody will finish (dunning.recovery),
    check the date and the stages, and record this run as `running`, committed at once so that a
    run refused meanwhile can name it. Returns the crashed runs and what was recovered."""
    with transaction(ctx.engine) as session:
        crashed = ledger.mark_crashed(session, shard)
        recovered = recover(session, ctx.settings.outbox_dir, ctx.settings.letters_dir,
                            _resend_after(ctx))
        # SendGrid's events received while their action was still being sent
        settle_reported(session, ctx.policy, as_of)
        ledger.check_stages(session, {stage.name for stage in ctx.policy.stages})
        ledger.start_run(session, run_id, as_of, shard)
    return crashed, recovered


def _resend_after(ctx: Context) -> timedelta | None:
    hours = ctx.policy.email.resend_unknown_after_hours if ctx.policy.email else None
    return None if hours is None else timedelta(hours=hours)


def recover_claims(ctx: Context) -> RecoveryResult:
    """`dunning recover`: under the run lock of the whole book, mark its runs left `running` as
    crashed, then settle every dead claim."""
    with run_lock(ctx, None), transaction(ctx.engine) as session:
        ledger.mark_crashed(session, None)
        return recover(session, ctx.settings.outbox_dir, ctx.settings.letters_dir,
                       _resend_after(ctx))


def forget(ctx: Context, run_id: str) -> None:
    """A run stopped before reconcile committed changed nothing: it leaves no row, like a run
    refused at the start (its date must not hold later runs back)."""
    with transaction(ctx.engine) as session:
        ledger.forget_run(session, run_id)


def reconcile(ctx: Context, snapshot: Snapshot | Staged, as_of: date, run_id: str,
              accept_mass_settlement: bool = False,
              shard: Shard | None = None) -> ReconcileResult:
    """Record the run and bring the ledger in line with the snapshot, in one transaction; a
    staged snapshot's table is dropped afterwards, whatever happened."""
    try:
        with transaction(ctx.engine) as session:
            if session.get(Run, run_id) is None:  # the flow records its run under the lock
                ledger.start_run(session, run_id, as_of, shard)
            return ledger.reconcile(session, snapshot, as_of, run_id, ctx.policy, shard,
                                    accept_mass_settlement=accept_mass_settlement)
    finally:
        if isinstance(snapshot, Staged):
            drop_staged(ctx.engine, snapshot.table)


def plan(ctx: Context, shard: Shard | None = None, as_of: date | None = None,
         run_id: str | None = None) -> list[tuple[int, int]]:
    """Batches of the customers with invoices due for review on `as_of` in run `run_id`
    (without them: of every customer with active invoices)."""
    with transaction(ctx.engine) as session:
        due = None if as_of is None else ledger.review_cutoff(
            session, ctx.policy, as_of, run_id, shard, ctx.settings.evaluate_all)
        return ledger.plan_batches(session, ctx.policy.batch_size, shard, due=due)


def evaluate(ctx: Context, as_of: date, run_id: str, low: int, high: int,
             shard: Shard | None = None) -> BatchResult:
    """One batch of customers, decided and recorded in one transaction."""
    with transaction(ctx.engine) as session:
        return ledger.evaluate_batch(session, ctx.policy, as_of, run_id, low, high, shard,
                                     ctx.settings.evaluate_all)


def dispatch(ctx: Context, as_of: date, *, kind: str = "email", dry_run: bool = False,
             shard: Shard | None = None, dispatcher: Dispatcher | None = None) -> DispatchResult:
    """Deliver what is claimable; with `dispatcher` (fed during evaluation), the rest of it."""
    if dispatcher is not None:
        return dispatcher.finish()
    settings = ctx.settings
    return deliver(ctx.engine, ctx.policy, None if dry_run else _transport(ctx), as_of,
                   kind=kind, letters_dir=settings.letters_dir, dry_run=dry_run, shard=shard,
                   workers=settings.dispatch_workers)


def email_dispatcher(ctx: Context, as_of: date, shard: Shard | None = None,
                     batches: int = 1) -> Dispatcher:
    """The emails' dispatcher of a run, fed after each evaluated batch (Dispatcher.feed). A run
    of several batches starts its worker processes at once, while the first is evaluated."""
    settings = ctx.settings
    return Dispatcher(ctx.engine, ctx.policy, _transport(ctx), as_of,
                      letters_dir=settings.letters_dir, shard=shard,
                      workers=settings.dispatch_workers, warm=batches > 1)


def _transport(ctx: Context) -> Outbox | SendGrid:
    """SendGrid when its key is set, else the outbox folder."""
    settings = ctx.settings
    key = settings.sendgrid_api_key.get_secret_value() if settings.sendgrid_api_key else None
    return transport(ctx.policy, settings.outbox_dir, key, settings.sendgrid_api_host)


def agency_sync(ctx: Context, as_of: date, run_id: str,
                shard: Shard | None = None) -> dict[str, Any]:
    """What the agency says about open cases, applied before the ladder is evaluated. An agency
    that cannot be reached is reported; the run goes on."""
    from dunning.channels.agency.sync import SyncResult, sync

    try:
        return sync(ctx.engine, ctx.policy, as_of, run_id=run_id, shard=shard).as_dict()
    except DunningError as exc:  # e.g. the token's variable is not set
        return SyncResult(errors=[{"case": None, "error": str(exc)}]).as_dict()


def agency_send(ctx: Context, as_of: date, shard: Shard | None = None) -> DispatchResult:
    """Send approved cases to the agency's API (without one, they wait for `agency export`)."""
    from dunning.channels.agency.client import send

    try:
        return send(ctx.engine, ctx.policy, as_of, shard=shard)
    except DunningError as exc:  # the approved cases stay approved, for the next run
        result = DispatchResult(channel="agency")
        result.errors.append({"action_id": None, "customer_id": None, "error": str(exc)})
        return result


def court_files(ctx: Context, as_of: date, shard: Shard | None = None) -> DispatchResult:
    """Write the court file of each approved injunction."""
    from dunning.channels import injunction

    return injunction.build(ctx.engine, ctx.policy, as_of, ctx.settings.injunctions_dir,
                            ctx.settings.outbox_dir, shard=shard)


def simulate(ctx: Context, snapshot: Snapshot | Staged, as_of: date, run_id: str,
             accept_mass_settlement: bool = False, shard: Shard | None = None) -> \
        tuple[ReconcileResult, BatchResult, DispatchResult]:
    """A dry run: every step in one transaction that is rolled back, so nothing is written."""
    engine = ctx.engine
    with Session(engine) as session:
        session.begin()
        try:
            ledger.check_run_date(session, as_of, shard)
            ledger.check_stages(session, {stage.name for stage in ctx.policy.stages})
            reconciled = ledger.reconcile(session, snapshot, as_of, run_id, ctx.policy, shard,
                                          accept_mass_settlement=accept_mass_settlement)
            evaluated = BatchResult()
            due = ledger.review_cutoff(session, ctx.policy, as_of, run_id, shard,
                                       ctx.settings.evaluate_all)
            for low, high in ledger.plan_batches(session, ctx.policy.batch_size, shard, due=due):
                evaluated.merge(ledger.evaluate_batch(session, ctx.policy, as_of, run_id, low,
                                                      high, shard, ctx.settings.evaluate_all))
            dispatched = DispatchResult(channel="email")
            dispatched.would_send = session.execute(
                select(func.count()).select_from(Action).where(
                    col(Action.kind) == "email", col(Action.status).in_(READY),
                    *in_shard(Action.customer_id, shard))
            ).scalar_one()
        finally:
            session.rollback()
            if isinstance(snapshot, Staged):
                drop_staged(engine, snapshot.table)
    return reconciled, evaluated, dispatched


def snapshot_counts(snapshot: Snapshot | Staged) -> dict[str, int]:
    invoices = snapshot.invoices if isinstance(snapshot, Staged) else len(snapshot.invoices)
    return {"customers": len(snapshot.customers), "invoices": invoices,
            "rejected": len(snapshot.rejects)}


DELIVERIES = ("dispatch", "letters", "agency", "injunctions")


def finish(ctx: Context, run_id: str, report: dict[str, Any],
           status: RunStatus = RunStatus.COMPLETED) -> None:
    with transaction(ctx.engine) as session:
        ledger.finish_run(session, run_id, status, {
            "invoices_seen": report["snapshot"]["invoices"],
            "rejected_rows": len(report["rejected_rows"]),
            "transitions": report["evaluation"]["transitions"],
            "actions_created": sum(report["evaluation"]["actions_created"].values()),
            "actions_sent": sum(report[k]["sent"] for k in DELIVERIES),
            "actions_failed": sum(report[k]["failed"] for k in DELIVERIES),
        })


def fail(ctx: Context, run_id: str) -> None:
    with transaction(ctx.engine) as session:
        ledger.finish_run(session, run_id, RunStatus.FAILED, {})


def build_report(
    ctx: Context, run_id: str, as_of: date, dry_run: bool, snapshot: Snapshot | Staged,
    reconciled: ReconcileResult, evaluated: BatchResult, dispatched: DispatchResult,
    letters: DispatchResult | None = None, agency: DispatchResult | None = None,
    injunctions: DispatchResult | None = None, agency_sync: dict[str, Any] | None = None,
    shard: Shard | None = None, crashed: list[dict[str, str]] | None = None,
    recovered: RecoveryResult | None = None,
) -> dict[str, Any]:
    """What happened, as stable JSON (documented in the README)."""
    return {
        "run_id": run_id,
        "as_of": as_of.isoformat(),
        "dry_run": dry_run,
        "shard": None if shard is None else str(shard),
        "crashed_runs": crashed or [],
        "recovered": (recovered or RecoveryResult()).as_dict(),
        "snapshot": snapshot_counts(snapshot),
        "reconcile": reconciled.as_dict(),
        "evaluation": {
            "invoices": evaluated.invoices,
            "entered": dict(sorted(evaluated.entered.items(),
                                   key=lambda kv: ctx.policy.stage_index(kv[0]))),
            "awaiting_approval": dict(evaluated.proposed),
            "actions_created": dict(evaluated.actions),
            "transitions": evaluated.transitions,
        },
        "dispatch": dispatched.as_dict(),
        "letters": (letters or DispatchResult(channel="letter")).as_dict()
        | {"to_post": 0 if dry_run else awaiting_post(ctx.engine, shard)},
        "agency": (agency or DispatchResult(channel="agency")).as_dict(),
        "agency_sync": agency_sync or {},
        "injunctions": (injunctions or DispatchResult(channel="injunction")).as_dict(),
        "outstanding": {} if dry_run else waiting_by_channel(ctx.engine, shard),
        "rejected_rows": [reject.as_dict() for reject in snapshot.rejects],
    }
