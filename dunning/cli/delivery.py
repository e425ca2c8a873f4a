"""Deliveries whose outcome a crash or a provider left open: `dunning recover`, `dunning
redeliver`, `dunning mark-sent` (dunning/recovery.py); invoices held by an undelivered step:
`dunning move-on` (dunning/ledger/delivery.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from dunning.cli.common import (
    JsonOption,
    app,
    emit,
    handles_errors,
    ledger_day,
    open_session,
    who,
)
from dunning.errors import ConfigError


@app.command()
@handles_errors
def recover(as_json: JsonOption = False) -> None:
    """Settle the claims of dispatches that died (each run does it first): a message whose
    outbox file exists is sent, one never written is queued again, one a provider may have is
    unknown. Refused while a run of the whole book is in progress."""
    from dunning import daily

    result = daily.recover_claims(daily.load_context()).as_dict()
    emit(result, as_json,
         f"{len(result['sent'])} sent (written before the crash), {len(result['requeued'])} "
         f"queued again, {len(result['unknown'])} unknown"
         + (f", {len(result['resent'])} unknown too long, sent again" if result["resent"]
            else ""))


@app.command()
@handles_errors
def redeliver(
    action_id: int,
    by: Annotated[str, typer.Option("--by", help="Who decides to send it again.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Send an `unknown` or failed email or letter again, at the next run (the customer may
    receive it twice if the provider had it: check its activity feed first)."""
    from dunning.recovery import redeliver as requeue

    by = who(by)
    with open_session() as session:
        action = requeue(session, action_id, by, reason)
        result = {"action_id": action_id, "status": str(action.status), "by": by,
                  "reason": reason}
    emit(result, as_json, f"action {action_id} queued again by {by}: it goes out at the next run")


@app.command("mark-sent")
@handles_errors
def mark_sent(
    action_id: int,
    by: Annotated[str, typer.Option("--by", help="Who declares it delivered.")],
    reason: Annotated[str, typer.Option("--reason", help="How it is known (kept).")],
    as_json: JsonOption = False,
) -> None:
    """Declare an `unknown` or failed email or letter delivered (seen in the provider's activity
    feed, confirmed by the customer): it is never sent again."""
    from dunning.recovery import mark_sent as settle

    by = who(by)
    if not reason.strip():
        raise ConfigError("--reason: say how you know it was delivered")
    with open_session() as session:
        action = settle(session, action_id, by, reason.strip())
        result = {"action_id": action_id, "status": str(action.status), "by": by,
                  "reason": reason.strip()}
    emit(result, as_json, f"action {action_id} marked sent by {by}")


@app.command("move-on")
@handles_errors
def move_on(
    action_id: int,
    by: Annotated[str, typer.Option("--by", help="Who lets the invoices go on.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, e.g. how the customer was "
                                                           "reached (kept).")],
    as_json: JsonOption = False,
) -> None:
    """Let the invoices held by an email or call task that did not reach the customer (failed,
    bounced, unknown, never worked) go on up the ladder from the next run, recorded on each
    invoice with who and why. A formal notice, an agency case or a court file is never
    skipped: a later step relies on it."""
    from dunning.ledger.delivery import move_on as release

    by = who(by)
    with ledger_day() as (ctx, session, on):
        result = release(session, ctx.policy, action_id, by=by, reason=reason, on=on)
    count = len(result["invoices"])
    emit(result, as_json, f"{count} invoice{'s' if count != 1 else ''} of action {action_id} "
                          f"({result['stage']}) go on from the next run, moved on by {by}")


events_app = typer.Typer(help="SendGrid's delivery events.", no_args_is_help=True)
app.add_typer(events_app, name="events")


@events_app.command("serve")
@handles_errors
def events_serve(
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8025,
) -> None:
    """Serve the Event Webhook endpoint, POST /events/sendgrid (uvicorn): requests signed with
    the key in SENDGRID_WEBHOOK_PUBLIC_KEY only. Put it behind your HTTPS reverse proxy."""
    import uvicorn

    from dunning.events_api import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level="info", proxy_headers=True)
