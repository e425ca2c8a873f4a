"""`dunning serve`: the daily deployment served by this process (no work pool needed).

Its name is its own (`daily-dunning/daily-served`): served under `daily`, it would take over
the deployment that `prefect deploy` registers from prefect.yaml (same id), move it off its
work pool and pause its schedule when the process stops."""

from __future__ import annotations

from prefect.schedules import Cron

from dunning.daily import load_context
from flows.daily import daily_dunning

SCHEDULE = "30 6 * * 1-5"  # 06:30, Monday to Friday
SERVED_NAME = "daily-served"


def serve_daily() -> None:
    policy = load_context().policy
    daily_dunning.serve(
        name=SERVED_NAME,
        schedules=[Cron(SCHEDULE, timezone=policy.timezone)],
        global_limit=1,  # never two daily runs at once
        description="The daily dunning run (pull, reconcile, evaluate, dispatch, report).",
        tags=["dunning"],
    )
