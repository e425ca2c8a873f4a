"""What people record: approvals and rejections, call outcomes, disputes and holds."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dunning.cli.common import (
    HINTS,
    JsonOption,
    app,
    emit,
    handles_errors,
    ledger_day,
    parse_date,
    print_json,
    print_table,
    who,
)
from dunning.errors import CallOutcomeError, ConfigError, DunningError


def _decide_on(action_id: int, by: str, approve: bool, text: str | None) -> dict[str, Any]:
    from dunning import ledger

    by = who(by)
    with ledger_day() as (ctx, session, on):
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
    emit(result, as_json,
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
    emit(result, as_json,
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
    """Open call tasks, one per customer (a customer's invoices reaching the phone stage later
    join the open task): those past their due date first, flagged with their days late, then
    the most overdue money. Who to call, about what, and what they were already told."""
    from dunning.calls import open_tasks

    with ledger_day() as (_, session, on):
        rows = open_tasks(session, on, assignee)
    if as_json:
        print_json(rows)
    else:
        late = sum(1 for row in rows if row["overdue"])
        print_table(rows, ["task_id", "customer_id", "customer_name", "phone", "invoice_ids",
                           "total_open", "assignee", "due_on", "days_late"],
                    f"{len(rows)} calls to make" + (f", {late} past their due date" if late
                                                    else ""))


def _outcome_hint(exc: DunningError) -> str | None:
    """The option of `dunning call-done` that answers a refused call outcome."""
    if not isinstance(exc, CallOutcomeError):
        return None
    return {
        "outcome": "Give --outcome as one of them.",
        "promise_date": f"--outcome {exc.outcome} needs --until DATE.",
        "callback_date": f"--outcome {exc.outcome} needs --on DATE.",
        "early_promise_date": "Give --until the date they will pay by, from the business date "
                              "on.",
        "early_callback_date": "Give --on the date to call again, from the business date on.",
        "amount": "--amount is what they promised of the open total shown by `dunning calls` "
                  "(use --invoice for one currency's invoices, or leave --amount out).",
        "reason": f"--outcome {exc.outcome} needs --reason TEXT.",
        "invoices": "--invoice takes the task's own invoices (see `dunning calls`).",
    }[exc.part]


HINTS[CallOutcomeError] = _outcome_hint


@app.command("call-done")
@handles_errors
def call_done(
    task_id: int,
    by: Annotated[str, typer.Option("--by", help="Who called.")],
    outcome: Annotated[str, typer.Option("--outcome", help="promise, dispute, no-answer, "
                                         "wrong-contact, paid-claimed, callback or reached.")],
    until: Annotated[str | None, typer.Option("--until", metavar="YYYY-MM-DD",
                                              help="promise: the date they will pay by.")] = None,
    amount: Annotated[str | None, typer.Option("--amount", help="promise: the amount "
                                               "promised.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="dispute: what is "
                                               "disputed.")] = None,
    call_on: Annotated[str | None, typer.Option("--on", metavar="YYYY-MM-DD",
                                                help="callback: when to call again.")] = None,
    invoice: Annotated[list[str] | None, typer.Option("--invoice", help="Only these invoices "
                                                      "of the task (repeat).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record what a call gave. A promise pauses the invoices until the date plus the grace
    days; a dispute pauses the disputed invoices until `dunning resolve`; paid-claimed pauses
    for the payment-in-transit days; no-answer keeps the task for another try. A promise or
    callback date before the business date, and an amount above what is open, are refused."""
    from dunning.calls import record_outcome

    # The domain takes one date: a promise's pay-by date, or a callback's (--on, or --until).
    date_given = parse_date(until, "--until") if outcome != "callback" else \
        parse_date(call_on or until, "--on")
    with ledger_day() as (ctx, session, on):
        result = record_outcome(
            session, ctx.policy, task_id, by=who(by), outcome=outcome,
            on=on, until=date_given, amount=_amount(amount),
            reason=reason, invoice_refs=invoice or None)
    emit(result, as_json,
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
    with ledger_day() as (_, session, on):
        invoice = pauses.dispute(session, invoice_id, by=who(by), reason=reason, on=on)
        result = {"invoice_id": invoice.external_id, "state": invoice.state,
                  "state_reason": invoice.state_reason}
    emit(result, as_json,
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

    with ledger_day() as (_, session, on):
        invoice = pauses.resolve(session, invoice_id, by=who(by), credit_note=credit_note,
                                 on=on)
        result = {"invoice_id": invoice.external_id, "state": invoice.state,
                  "state_reason": invoice.state_reason}
    emit(result, as_json,
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

    end = parse_date(until, "--until")
    if not reason.strip():
        raise ConfigError("--reason: say why the customer is on hold")
    with ledger_day() as (_, session, on):
        count = pauses.hold(session, customer_id, until=end, by=who(by), reason=reason, on=on)
    if as_json:
        print_json({"customer_id": customer_id, "hold_until": end.isoformat(),
                     "invoices_paused": count})
    else:
        typer.echo(f"customer {customer_id} on hold until {end}: {count} invoice(s) paused")

