"""Looking at the ledger: `dunning status`, `history` and `actions`."""

from __future__ import annotations

from typing import Annotated

import typer

from dunning.cli.common import (
    JsonOption,
    app,
    handles_errors,
    ledger_day,
    open_session,
    print_json,
    print_table,
)
from dunning.errors import ConfigError
from dunning.statuses import ActionStatus

KNOWN_STATUSES = tuple(status.value for status in ActionStatus)


@app.command()
@handles_errors
def status(
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every known invoice: stage, state, open amount, days overdue, pending action, and why an
    active one waits (the ladder's reason, or the customer's: the contact cadence, an open
    formal notice).

    Days overdue and the reasons are those of the last run's business date."""
    from dunning.views import invoice_status

    with ledger_day() as (ctx, session, on):
        rows = invoice_status(session, on, customer, ctx.policy)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["invoice_id", "customer_id", "stage", "state", "amount_open",
                           "currency", "days_overdue", "pending_action", "waiting"],
                    f"{len(rows)} invoices")


@app.command()
@handles_errors
def history(invoice_id: str, as_json: JsonOption = False) -> None:
    """An invoice's transitions: when, from which stage to which, why, and who."""
    from dunning.views import invoice_history

    with open_session() as session:
        rows = invoice_history(session, invoice_id)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["at", "event", "from_stage", "to_stage", "reason", "detail", "actor"],
                    f"history of {invoice_id}")


@app.command()
@handles_errors
def actions(
    status: Annotated[str | None, typer.Option(
        "--status", help=f"{', '.join(KNOWN_STATUSES[:-1])} or {KNOWN_STATUSES[-1]}.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The actions (messages and tasks) the ladder created, and what happened to them."""
    from dunning.views import action_list

    if status is not None and status not in KNOWN_STATUSES:
        raise ConfigError(f"--status: {status!r} is not one of {', '.join(KNOWN_STATUSES)}")
    with open_session() as session:
        rows = action_list(session, status)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["post"] = "to post" if row["to_post"] else (
            f"posted {row['posted_on']} ({row['tracking']})" if row["posted_on"] else None)
    print_table(rows, ["action_id", "kind", "stage", "customer_id", "invoice_ids", "status",
                       "post", "created_at", "last_error"], f"{len(rows)} actions")
    waiting = sum(1 for row in rows if row["to_post"])
    if waiting:
        typer.echo(f"{waiting} formal notice(s) to post by registered mail: print them with "
                   "`dunning letters print`, then record each with `dunning letter-posted`",
                   err=True)

