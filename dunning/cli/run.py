"""`dunning run`: the daily flow once, after the checks that need no Prefect."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dunning.cli.common import (
    JsonOption,
    app,
    handles_errors,
    parse_date,
    policy_context,
    print_json,
    quiet_prefect,
)

EXIT_REJECTED_ROWS = 3


@app.command()
@handles_errors
def run(
    as_of: Annotated[str | None, typer.Option("--as-of", metavar="YYYY-MM-DD",
                                              help="Business date (default: today in the "
                                                   "policy's time zone).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute and report; write and "
                                                            "send nothing.")] = False,
    accept_mass_settlement: Annotated[bool, typer.Option(
        "--accept-mass-settlement", help="Confirm that this snapshot's settlements are real "
        "payments, though they look like an export cut short (far more customers than a normal "
        "day, more than max_settled_share of the open book, or an empty export).")] = False,
    shard: Annotated[str | None, typer.Option(
        "--shard", metavar="K/N", help="Only the customers of shard K of N (run the N shards "
        "at once, on several machines, against PostgreSQL).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the daily flow once: pull, reconcile, evaluate, record, dispatch, report.

    Each customer hears one voice: one email a day at the firmest step its invoices take, at
    most one every `contact.min_days_between` days and `contact.max_per_month` a month (an
    approved letter is exempt); no softer step under a formal notice; one open notice and one
    open call task at a time. `dunning status` says why an invoice waits.

    Exit status 3 when rows of the snapshot were rejected (the rest was processed)."""
    from dunning.shards import Shard
    from dunning.sources import preflight

    business_date = parse_date(as_of, "--as-of")
    part = Shard.of(shard, "--shard")
    ctx = policy_context()
    # A bad file is refused here, in a second, before the pipeline and Prefect are imported.
    preflight(ctx.policy, ctx.policy_path)
    from dunning.daily import check_date, check_no_run_in_progress
    from dunning.db import upgrade

    if not dry_run:
        # First, and before Prefect: on SQLite, the upgrade would wait on a run's transaction.
        check_no_run_in_progress(ctx, part)
        upgrade(ctx.settings.database_url)
        # Refuse a date in the past before starting Prefect (a few seconds).
        check_date(ctx, business_date or ctx.today(), part)
    quiet_prefect(as_json)
    from flows.daily import daily_dunning

    report = daily_dunning(as_of=business_date, dry_run=dry_run,
                           accept_mass_settlement=accept_mass_settlement,
                           shard=None if part is None else str(part))
    _show_report(report, as_json)
    if report["rejected_rows"]:
        raise typer.Exit(EXIT_REJECTED_ROWS)


def _show_report(report: dict[str, Any], as_json: bool) -> None:
    from dunning.report import summary_lines

    if as_json:
        print_json(report)
        return
    for line in summary_lines(report):
        typer.echo(line)
    for reject in report["rejected_rows"]:
        typer.echo(f"rejected {reject['file']}:{reject['line']}: {reject['field']}: "
                   f"{reject['message']}", err=True)

