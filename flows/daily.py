"""The daily dunning run: pull, reconcile, evaluate, dispatch, report."""

# No `from __future__ import annotations` in flows: a deployment run (worker or `serve`)
# validates its parameters against the flow's annotations, which must then be real types, not
# strings (pydantic: "`Daily_DunningModel` is not fully defined; you should define `date`").
import uuid
from datetime import date
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from dunning import daily
from dunning.dispatch import claims_of
from dunning.ledger import BatchResult
from dunning.report import Stopwatch
from dunning.shards import Shard
from dunning.staging import Staged
from tasks.daily import (
    agency_sync,
    court_files,
    dispatch_agency,
    dispatch_email,
    dispatch_letters,
    evaluate,
    plan_batches,
    publish_report,
    pull_snapshot,
    reconcile,
    simulate,
)

T = TypeVar("T")


def _unwalked(value: T) -> T:
    """`value` in Prefect's quote(): Prefect would otherwise walk every row of it looking for
    futures. The task receives `value` itself (Prefect unwraps the quote before calling it), but
    Task.__call__'s signature does not say so: hence the cast, to the type the task receives."""
    return cast(T, quote(value))


@flow(name="daily-dunning", log_prints=False)
def daily_dunning(as_of: date | None = None, dry_run: bool = False,
                  accept_mass_settlement: bool = False,
                  shard: str | None = None, config: str | None = None) -> dict[str, Any]:
    """Walk every open invoice one step up the ladder and send what is due, for `as_of`
    (default: today in the policy's time zone). `dry_run` writes and sends nothing;
    `accept_mass_settlement` confirms settlements the mass-settlement guard would refuse;
    `shard` ("K/N") limits the run to the customers of shard K of N; `config` is the policy
    file (default: DUNNING_CONFIG, else ./config/policy.yaml, else the shipped one)."""
    logger = get_run_logger()
    clock = Stopwatch()
    part = Shard.of(shard, "shard")
    ctx = daily.load_context(config)
    as_of = as_of or ctx.today()
    run_id = str(flow_run.id or uuid.uuid4())
    if dry_run:
        # A dry run writes nothing, so it takes no run lock: it never holds a real run back.
        daily.check_date(ctx, as_of, part)
        snapshot = _pull(ctx, part, clock)
        with clock("evaluate"):
            reconciled, evaluated, dispatched = simulate(ctx, _unwalked(snapshot), as_of, run_id,
                                                           accept_mass_settlement, part)
        with clock("report"):
            report = daily.build_report(ctx, run_id, as_of, True, snapshot, reconciled,
                                        evaluated, dispatched, shard=part)
            publish_report(_unwalked(report))
        return _done(report, clock)

    # One run of a shard at a time, the lock held to the end (dunning.runlock): a second run is
    # refused here, naming this one, and a run of the shard found `running` meanwhile died.
    with daily.run_lock(ctx, part), claims_of(run_id):
        crashed, recovered = daily.start(ctx, run_id, as_of, part)
        for dead in crashed:
            logger.warning("run %s of %s (started %s) had crashed: marked crashed",
                           dead["run_id"], dead["as_of"], dead["started_at"])
        try:
            snapshot = _pull(ctx, part, clock)
            with clock("reconcile"):
                reconciled = reconcile(ctx, _unwalked(snapshot), as_of, run_id,
                                       accept_mass_settlement, part)
        except BaseException:
            daily.forget(ctx, run_id)  # nothing was changed
            raise
        emails = None
        try:
            with clock("agency_sync"):
                synced = agency_sync(ctx, as_of, run_id, part)
            with clock("evaluate"):
                evaluated = BatchResult()
                # Each evaluated batch's emails go to the dispatcher's workers at once: they are
                # written while the next batch is evaluated (dunning.dispatch.Dispatcher).
                batches = plan_batches(ctx, part, as_of, run_id)
                emails = daily.email_dispatcher(ctx, as_of, part, len(batches))
                for low, high in batches:
                    evaluated.merge(evaluate(ctx, as_of, run_id, low, high, part))
                    emails.feed()
            with clock("dispatch"):
                dispatched = dispatch_email(ctx, as_of, dry_run=False, shard=part,
                                            dispatcher=emails)
                letters = dispatch_letters(ctx, as_of, part)
                handed = dispatch_agency(ctx, as_of, part)
                filed = court_files(ctx, as_of, part)
        except BaseException:
            if emails is not None:
                emails.close()  # what its workers wrote is recorded
            daily.fail(ctx, run_id)
            raise
        with clock("report"):
            report = daily.build_report(
                ctx, run_id, as_of, False, snapshot, reconciled, evaluated, dispatched,
                letters, handed, filed, synced, shard=part, crashed=crashed,
                recovered=recovered)
            daily.finish(ctx, run_id, report)
            publish_report(_unwalked(report))
    return _done(report, clock)


def _pull(ctx: daily.Context, part: Shard | None, clock: Stopwatch) -> Staged:
    logger = get_run_logger()
    with clock("pull"):
        snapshot = pull_snapshot(ctx, part)
    counts = daily.snapshot_counts(snapshot)
    logger.info("snapshot%s: %d customers, %d invoices, %d rejected rows",
                "" if part is None else f" (shard {part})",
                counts["customers"], counts["invoices"], counts["rejected"])
    return snapshot


def _done(report: dict[str, Any], clock: Stopwatch) -> dict[str, Any]:
    report["timings"] = clock.seconds
    get_run_logger().info("entered: %s; sent %d, failed %d", report["evaluation"]["entered"],
                          report["dispatch"]["sent"], report["dispatch"]["failed"])
    return report
