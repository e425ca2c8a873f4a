"""`dunning demo` and `dunning serve`: the sample portfolio over simulated days, and the daily
deployment served on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from dunning.cli.common import JsonOption, app, handles_errors, quiet_prefect


@app.command()
@handles_errors
def demo(
    days: Annotated[int, typer.Option("--days", min=1, help="Business days to simulate.")] = 40,
    as_json: JsonOption = False,
) -> None:
    """Seed the sample portfolio and run the daily flow over simulated business days, on the
    embedded defaults (SQLite, emails in the outbox folder)."""
    quiet_prefect(True)
    from dunning.demo.simulation import run_demo

    run_demo(days=days, as_json=as_json)


@app.command()
@handles_errors
def serve() -> None:
    """Serve the daily deployment on this machine: 06:30 Monday to Friday in the policy's time
    zone, one run at a time."""
    from flows.serve import serve_daily

    serve_daily()

