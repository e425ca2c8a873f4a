"""The daily run's tasks. Business logic lives in `dunning.daily`; here: names, retries, caching.

Caching is off everywhere: every run must read the accounting system and the database afresh,
and hashing a snapshot of a million rows to build a cache key would cost more than the step."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dunning import daily
from dunning.daily import Context
from dunning.dispatch import Dispatcher, DispatchResult
from dunning.ledger import BatchResult, ReconcileResult
from dunning.shards import Shard
from dunning.staging import Staged


@task(name="pull", cache_policy=NO_CACHE)
def pull_snapshot(ctx: Context, shard: Shard | None = None) -> Staged:
    """Read the receivables snapshot named by the policy into a staging table (the shard's
    customers only, when given). No task-level retries: the HTTP source retries each page itself
    (`source.retries`), and a file does not heal by waiting."""
    return daily.pull_snapshot(ctx, shard)


@task(name="reconcile", cache_policy=NO_CACHE)
def reconcile(ctx: Context, snapshot: Staged, as_of: date, run_id: str,
              accept_mass_settlement: bool, shard: Shard | None = None) -> ReconcileResult:
    """Record the run and bring the ledger in line with the snapshot."""
    return daily.reconcile(ctx, snapshot, as_of, run_id, accept_mass_settlement, shard)


@task(name="plan-batches", cache_policy=NO_CACHE)
def plan_batches(ctx: Context, shard: Shard | None = None, as_of: date | None = None,
                 run_id: str | None = None) -> list[tuple[int, int]]:
    """Split the invoices due for review into customer ranges of about `batch_size`."""
    return daily.plan(ctx, shard, as_of, run_id)


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name="evaluate-customers-{low}-{high}")
def evaluate(ctx: Context, as_of: date, run_id: str, low: int, high: int,
             shard: Shard | None = None) -> BatchResult:
    """Decide and record one batch of customers in one transaction."""
    return daily.evaluate(ctx, as_of, run_id, low, high, shard)


@task(name="dispatch-email", cache_policy=NO_CACHE)
def dispatch_email(ctx: Context, as_of: date, dry_run: bool, shard: Shard | None = None,
                   dispatcher: Dispatcher | None = None) -> DispatchResult:
    """Deliver queued and approved emails (each claimed first: never twice); with the
    `dispatcher` fed while the batches were evaluated, the rest of them."""
    return daily.dispatch(ctx, as_of, dry_run=dry_run, shard=shard, dispatcher=dispatcher)


@task(name="dispatch-letters", cache_policy=NO_CACHE)
def dispatch_letters(ctx: Context, as_of: date, shard: Shard | None = None) -> DispatchResult:
    """Write approved formal notices as PDFs, email them, keep them for registered post."""
    return daily.dispatch(ctx, as_of, kind="letter", shard=shard)


@task(name="agency-sync", cache_policy=NO_CACHE)
def agency_sync(ctx: Context, as_of: date, run_id: str,
                shard: Shard | None = None) -> dict[str, Any]:
    """Apply what the collection agency reports on open cases (the client retries each call)."""
    return daily.agency_sync(ctx, as_of, run_id, shard)


@task(name="dispatch-agency", cache_policy=NO_CACHE)
def dispatch_agency(ctx: Context, as_of: date, shard: Shard | None = None) -> DispatchResult:
    """Send approved cases to the collection agency (Idempotency-Key: never two cases)."""
    return daily.agency_send(ctx, as_of, shard)


@task(name="court-files", cache_policy=NO_CACHE)
def court_files(ctx: Context, as_of: date, shard: Shard | None = None) -> DispatchResult:
    """Write the court file (folder and zip) of each approved injunction to pay."""
    return daily.court_files(ctx, as_of, shard)


@task(name="simulate", cache_policy=NO_CACHE)
def simulate(ctx: Context, snapshot: Staged, as_of: date, run_id: str,
             accept_mass_settlement: bool,
             shard: Shard | None = None) -> tuple[ReconcileResult, BatchResult, DispatchResult]:
    """A dry run of reconcile and evaluate in a transaction that is rolled back."""
    return daily.simulate(ctx, snapshot, as_of, run_id, accept_mass_settlement, shard)


@task(name="report", cache_policy=NO_CACHE)
def publish_report(report: dict[str, Any]) -> None:
    """Publish the run's report as Prefect artifacts (markdown and tables)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from dunning.report import markdown, stage_rows

    create_markdown_artifact(markdown=markdown(report), key="dunning-daily-report",
                             description=f"Dunning run of {report['as_of']}")
    create_table_artifact(table=stage_rows(report), key="dunning-daily-stages",
                          description="Invoices entering each stage, and actions created")
    if report["rejected_rows"]:
        create_table_artifact(table=report["rejected_rows"], key="dunning-rejected-rows",
                              description="Snapshot rows left out: file, line, field, why")
