"""The `dunning` command. Only `run`, `serve` and `demo` import Prefect, so the others answer
at once."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dunning.errors import ConfigError, DunningError

app = typer.Typer(
    name="dunning",
    help="Chase unpaid B2B invoices up an escalation ladder, every business day.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
db_app = typer.Typer(help="The dunning database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
agency_app = typer.Typer(
    help="Cases handed to the collection agency: pull their status, or export them as files.",
    no_args_is_help=True)
app.add_typer(agency_app, name="agency")

F = TypeVar("F", bound=Callable[..., Any])
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
EXIT_REJECTED_ROWS = 3


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"dunning: {message}", err=True)
    return typer.Exit(code)


def handles_errors(command: F) -> F:
    """Turn dunning's exceptions into a message on stderr and the documented exit status."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DunningError as exc:
            raise _fail(str(exc), exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _emit(result: dict[str, Any], as_json: bool, sentence: str) -> None:
    """A command's outcome: JSON on stdout with --json, else one sentence."""
    if as_json:
        _print_json(result)
    else:
        typer.echo(sentence)


def _who(by: str) -> str:
    if not by.strip():
        raise ConfigError("--by: give the name of the person")
    return by.strip()


def _parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option}: {value!r} is not a date (expected YYYY-MM-DD)") from None


def _context() -> Any:
    from dunning.context import load_context

    return load_context()


def _quiet_prefect(quiet: bool) -> None:
    """Prefect logs progress on a terminal; piped or with --json, only warnings."""
    # The ephemeral server would try to reach Prefect's analytics service on every start.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if quiet or not sys.stderr.isatty():
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


# --- db -----------------------------------------------------------------------------------


@db_app.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or migrate the schema of DUNNING_DATABASE_URL to the newest version."""
    from dunning.db import upgrade
    from dunning.settings import load_settings

    revision = upgrade(load_settings().database_url)
    typer.echo(f"database at revision {revision}", err=True)


# --- the daily run --------------------------------------------------------------------------


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

    Exit status 3 when rows of the snapshot were rejected (the rest was processed)."""
    from dunning.shards import Shard
    from dunning.sources import preflight

    business_date = _parse_date(as_of, "--as-of")
    part = Shard.of(shard)
    ctx = _context()
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
    _quiet_prefect(as_json)
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
        _print_json(report)
        return
    for line in summary_lines(report):
        typer.echo(line)
    for reject in report["rejected_rows"]:
        typer.echo(f"rejected {reject['file']}:{reject['line']}: {reject['field']}: "
                   f"{reject['message']}", err=True)


# --- looking -------------------------------------------------------------------------------


def _session() -> Any:
    from dunning.db import require_schema, transaction
    from dunning.settings import load_settings

    return transaction(require_schema(load_settings().database_url))


@contextmanager
def _ledger_day() -> Iterator[tuple[Any, Any, date]]:
    """The policy context, a session, and the ledger's business date (the last run's, or
    today before any run): what people record is dated like the run it follows."""
    from dunning.ledger import business_date

    ctx = _context()
    with _session() as session:
        yield ctx, session, business_date(session, ctx.today())


def _table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*["" if row[c] is None else
                        (", ".join(row[c]) if isinstance(row[c], list) else str(row[c]))
                        for c in columns])
    Console().print(table)


@app.command()
@handles_errors
def status(
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every known invoice: stage, state, open amount, days overdue, pending action.

    Days overdue are counted on the last run's business date."""
    from dunning.views import invoice_status

    with _ledger_day() as (_, session, on):
        rows = invoice_status(session, on, customer)
    if as_json:
        _print_json(rows)
    else:
        _table(rows, ["invoice_id", "customer_id", "stage", "state", "amount_open",
                      "currency", "days_overdue", "pending_action"], f"{len(rows)} invoices")


@app.command()
@handles_errors
def history(invoice_id: str, as_json: JsonOption = False) -> None:
    """An invoice's transitions: when, from which stage to which, why, and who."""
    from dunning.views import invoice_history

    with _session() as session:
        rows = invoice_history(session, invoice_id)
    if as_json:
        _print_json(rows)
    else:
        _table(rows, ["at", "event", "from_stage", "to_stage", "reason", "detail", "actor"],
               f"history of {invoice_id}")


@app.command()
@handles_errors
def actions(
    status: Annotated[str | None, typer.Option("--status", help="pending_approval, approved, "
                                               "rejected, queued, sending, sent, failed or "
                                               "cancelled.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The actions (messages and tasks) the ladder created, and what happened to them."""
    from dunning.views import action_list

    known = ("pending_approval", "approved", "rejected", "queued", "sending", "sent", "failed",
             "cancelled")
    if status is not None and status not in known:
        raise ConfigError(f"--status: {status!r} is not one of {', '.join(known)}")
    with _session() as session:
        rows = action_list(session, status)
    if as_json:
        _print_json(rows)
    else:
        _table(rows, ["action_id", "kind", "stage", "customer_id", "invoice_ids", "status",
                      "created_at", "last_error"], f"{len(rows)} actions")


# --- approvals -------------------------------------------------------------------------------


def _decide_on(action_id: int, by: str, approve: bool, text: str | None) -> dict[str, Any]:
    from dunning import ledger

    by = _who(by)
    with _ledger_day() as (ctx, session, on):
        if approve:
            action = ledger.approve(session, ctx.policy, action_id, by, text, on)
        else:
            action = ledger.reject(session, action_id, by, text or "", on)
        return {"action_id": action.id, "status": action.status, "stage": action.stage,
                "by": by, "business_date": on.isoformat()}


@app.command()
@handles_errors
def approve(
    action_id: int,
    by: Annotated[str, typer.Option("--by", help="Who approves.")],
    comment: Annotated[str | None, typer.Option("--comment")] = None,
    as_json: JsonOption = False,
) -> None:
    """Approve a pending action: its invoices enter the stage and it goes out at the next run."""
    result = _decide_on(action_id, by, True, comment)
    _emit(result, as_json,
          f"action {action_id} ({result['stage']}) {result['status']} by {by}")


@app.command()
@handles_errors
def reject(
    action_id: int,
    by: Annotated[str, typer.Option("--by", help="Who rejects.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    as_json: JsonOption = False,
) -> None:
    """Reject a pending action: nothing goes out and that stage is not proposed again."""
    if not reason.strip():
        raise ConfigError("--reason: say why the action is rejected")
    result = _decide_on(action_id, by, False, reason)
    _emit(result, as_json,
          f"action {action_id} ({result['stage']}) rejected by {by}")


# --- calls and pauses --------------------------------------------------------------------


def _amount(value: str | None) -> Any:
    from decimal import Decimal, InvalidOperation

    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount <= 0:
        raise ConfigError(f"--amount: {value!r} is not a positive amount (use '.' for decimals)")
    return amount


@app.command()
@handles_errors
def calls(
    assignee: Annotated[str | None, typer.Option("--assignee", help="Only this collector's "
                                                 "calls.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Open call tasks, most overdue money first: who to call, about what, and what they were
    already told."""
    from dunning.calls import open_tasks

    with _ledger_day() as (_, session, on):
        rows = open_tasks(session, on, assignee)
    if as_json:
        _print_json(rows)
    else:
        _table(rows, ["task_id", "customer_id", "customer_name", "phone", "invoice_ids",
                      "total_open", "assignee", "due_on"], f"{len(rows)} calls to make")


@app.command("call-done")
@handles_errors
def call_done(
    task_id: int,
    by: Annotated[str, typer.Option("--by", help="Who called.")],
    outcome: Annotated[str, typer.Option("--outcome", help="promise, dispute, no-answer, "
                                         "wrong-contact, paid-claimed or callback.")],
    until: Annotated[str | None, typer.Option("--until", metavar="YYYY-MM-DD",
                                              help="promise: the date they will pay by.")] = None,
    amount: Annotated[str | None, typer.Option("--amount", help="promise: the amount "
                                               "promised.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="dispute: what is "
                                               "disputed.")] = None,
    on: Annotated[str | None, typer.Option("--on", metavar="YYYY-MM-DD",
                                           help="callback: when to call again.")] = None,
    invoice: Annotated[list[str] | None, typer.Option("--invoice", help="Only these invoices "
                                                      "of the task (repeat).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record what a call gave. A promise pauses the invoices until the date plus the grace
    days; a dispute pauses the disputed invoices until `dunning resolve`; paid-claimed pauses
    for the payment-in-transit days; no-answer keeps the task for another try."""
    from dunning.calls import record_outcome

    date_given = _parse_date(until, "--until") if outcome != "callback" else \
        _parse_date(on or until, "--on")
    with _ledger_day() as (ctx, session, on):
        result = record_outcome(
            session, ctx.policy, task_id, by=_who(by), outcome=outcome,
            on=on, until=date_given, amount=_amount(amount),
            reason=reason, invoice_refs=invoice or None)
    _emit(result, as_json,
          f"call task {task_id}: {outcome} recorded; task {result['status']}"
          + (f", {result['invoices_paused']} invoice(s) paused"
             if result["invoices_paused"] else ""))


@app.command()
@handles_errors
def dispute(
    invoice_id: str,
    by: Annotated[str, typer.Option("--by", help="Who records the dispute.")],
    reason: Annotated[str, typer.Option("--reason", help="What the customer disputes.")],
    as_json: JsonOption = False,
) -> None:
    """Pause one invoice for a dispute: no dunning until `dunning resolve`."""
    from dunning import pauses

    if not reason.strip():
        raise ConfigError("--reason: say what is disputed")
    with _ledger_day() as (_, session, on):
        invoice = pauses.dispute(session, invoice_id, by=_who(by), reason=reason, on=on)
        result = {"invoice_id": invoice.external_id, "state": invoice.state,
                  "state_reason": invoice.state_reason}
    _emit(result, as_json,
          f"invoice {invoice_id} paused: disputed")


@app.command()
@handles_errors
def resolve(
    invoice_id: str,
    by: Annotated[str, typer.Option("--by", help="Who resolves the dispute.")],
    credit_note: Annotated[bool, typer.Option("--credit-note", help="A credit note will "
                                              "settle it: keep it out of dunning.")] = False,
    as_json: JsonOption = False,
) -> None:
    """End a dispute or a write-off review: escalation resumes where it stood (or, with
    --credit-note, the invoice waits for the credit note to settle it)."""
    from dunning import pauses

    with _ledger_day() as (_, session, on):
        invoice = pauses.resolve(session, invoice_id, by=_who(by), credit_note=credit_note,
                                 on=on)
        result = {"invoice_id": invoice.external_id, "state": invoice.state,
                  "state_reason": invoice.state_reason}
    _emit(result, as_json,
          f"invoice {invoice_id}: dispute resolved, now {result['state']}")


@app.command()
@handles_errors
def hold(
    customer_id: str,
    until: Annotated[str, typer.Option("--until", metavar="YYYY-MM-DD",
                                       help="Last day of the pause.")],
    by: Annotated[str, typer.Option("--by", help="Who grants the pause.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    as_json: JsonOption = False,
) -> None:
    """Pause every invoice of a customer through a date (new invoices too)."""
    from dunning import pauses

    end = _parse_date(until, "--until")
    assert end is not None
    if not reason.strip():
        raise ConfigError("--reason: say why the customer is on hold")
    with _ledger_day() as (_, session, on):
        count = pauses.hold(session, customer_id, until=end, by=_who(by), reason=reason, on=on)
    if as_json:
        _print_json({"customer_id": customer_id, "hold_until": end.isoformat(),
                     "invoices_paused": count})
    else:
        typer.echo(f"customer {customer_id} on hold until {end}: {count} invoice(s) paused")


# --- collection agency ------------------------------------------------------------------------


@agency_app.command("sync")
@handles_errors
def agency_sync(as_json: JsonOption = False) -> None:
    """Pull the status of every open agency case and apply it.

    Asks the agency (policy `agency.url`) about each open case: amounts collected reduce or
    close the invoices, a case closed as unrecoverable puts its invoices up for write-off
    review. Exits 1 if the agency could not answer for some case (the others are applied)."""
    from dunning.channels.agency import sync as agency
    from dunning.ledger import business_date

    ctx = _context()
    if ctx.policy.agency is None or not ctx.policy.agency.url:
        raise ConfigError(f"{ctx.policy_path}: agency.url: not set, so there is no agency API to "
                          "ask; cases handed over with `dunning agency export` are followed up "
                          "with the agency directly")
    with _session() as session:
        on = business_date(session, ctx.today())
    result = agency.sync(ctx.engine, ctx.policy, on)
    with _session() as session:
        cases = agency.open_cases(session)
    if as_json:
        _print_json(result.as_dict() | {"business_date": on.isoformat(), "cases_list": cases})
    else:
        collected = ", ".join(f"{v} {k}" for k, v in result.as_dict()["collected"].items())
        typer.echo(f"{result.cases} open case(s) asked, {result.updated} with news; collected "
                   f"{collected or 'nothing new'}; {result.closed} invoice(s) closed, "
                   f"{result.write_off_review} up for write-off review")
    for error in result.errors:
        typer.echo(f"dunning: agency case {error['case']}: {error['error']}", err=True)
    if result.errors:
        raise typer.Exit(1)


@agency_app.command("export")
@handles_errors
def agency_export(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder to write the cases "
                                      "in (created if needed).")],
    as_json: JsonOption = False,
) -> None:
    """Write the approved agency cases as files, for agencies without an API.

    One JSON file per case (the API's schema, notice PDF included) and cases.csv, one row per
    invoice of every case in the folder. Each case is exported once; exits 1 if some case could
    not be built."""
    from dunning.channels.agency import export as agency
    from dunning.ledger import business_date

    ctx = _context()
    with _session() as session:
        on = business_date(session, ctx.today())
    result, written, skipped = agency.export(ctx.engine, ctx.policy, out, on)
    summary = {"out": str(out), "exported": result.sent, "failed": result.failed,
               "files": [str(p) for p in written], "errors": result.errors, "skipped": skipped}
    _emit(summary, as_json, f"{result.sent} case(s) written to {out} (cases.csv lists every "
          "invoice)" + (f"; {result.failed} failed" if result.failed else ""))
    for line in skipped:
        typer.echo(f"dunning: {line}", err=True)
    for error in result.errors:
        typer.echo(f"dunning: action {error['action_id']} ({error['customer_id']}): "
                   f"{error['error']}", err=True)
    if result.failed:
        raise typer.Exit(1)


# --- demo and serve ---------------------------------------------------------------------------


@app.command()
@handles_errors
def demo(
    days: Annotated[int, typer.Option("--days", min=1, help="Business days to simulate.")] = 40,
    as_json: JsonOption = False,
) -> None:
    """Seed the sample portfolio and run the daily flow over simulated business days, on the
    embedded defaults (SQLite, emails in the outbox folder)."""
    _quiet_prefect(True)
    from dunning.demo.simulation import run_demo

    run_demo(days=days, as_json=as_json)


@app.command()
@handles_errors
def serve() -> None:
    """Serve the daily deployment on this machine: 06:30 Monday to Friday in the policy's time
    zone, one run at a time."""
    from flows.serve import serve_daily

    serve_daily()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
