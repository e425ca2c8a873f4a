"""`dunning agency`: the cases handed to the collection agency, synced or exported as files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dunning.cli.common import (
    HINTS,
    JsonOption,
    app,
    emit,
    handles_errors,
    open_session,
    policy_context,
    print_json,
)
from dunning.errors import ConfigError, NoAgencyApi

agency_app = typer.Typer(
    help="Cases handed to the collection agency: pull their status, or export them as files.",
    no_args_is_help=True)
app.add_typer(agency_app, name="agency")
HINTS[NoAgencyApi] = "Hand the cases over as files with `dunning agency export --out DIR`."


@agency_app.command("sync")
@handles_errors
def agency_sync(as_json: JsonOption = False) -> None:
    """Pull the status of every open agency case and apply it.

    Asks the agency (policy `agency.url`) about each open case: amounts collected reduce or
    close the invoices, a case closed as unrecoverable puts its invoices up for write-off
    review. Exits 1 if the agency could not answer for some case (the others are applied)."""
    from dunning.channels.agency import sync as agency
    from dunning.ledger import business_date

    ctx = policy_context()
    if ctx.policy.agency is None or not ctx.policy.agency.url:
        raise ConfigError(f"{ctx.policy_path}: agency.url: not set, so there is no agency API to "
                          "ask; cases handed over with `dunning agency export` are followed up "
                          "with the agency directly")
    with open_session() as session:
        on = business_date(session, ctx.today())
    result = agency.sync(ctx.engine, ctx.policy, on)
    with open_session() as session:
        cases = agency.open_cases(session)
    if as_json:
        print_json(result.as_dict() | {"business_date": on.isoformat(), "cases_list": cases})
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

    ctx = policy_context()
    with open_session() as session:
        on = business_date(session, ctx.today())
    result, written, skipped = agency.export(ctx.engine, ctx.policy, out, on)
    summary = {"out": str(out), "exported": result.sent, "failed": result.failed,
               "files": [str(p) for p in written], "errors": result.errors, "skipped": skipped}
    emit(summary, as_json, f"{result.sent} case(s) written to {out} (cases.csv lists every "
          "invoice)" + (f"; {result.failed} failed" if result.failed else ""))
    for line in skipped:
        typer.echo(f"dunning: {line}", err=True)
    for error in result.errors:
        typer.echo(f"dunning: action {error['action_id']} ({error['customer_id']}): "
                   f"{error['error']}", err=True)
    if result.failed:
        raise typer.Exit(1)

