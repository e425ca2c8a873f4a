"""`dunning demo`: the sample portfolio through the daily flow over simulated business days."""

from __future__ import annotations

import json
import sys
from collections import Counter
from itertools import islice
from typing import Any

from sqlalchemy import func, select

from dunning import daily
from dunning.business_days import business_days
from dunning.calls import open_tasks
from dunning.db import transaction, upgrade
from dunning.demo import DEMO_START, write_snapshot
from dunning.errors import ConfigError
from dunning.models import Invoice, Run
from dunning.policy import CsvSource, resolve_input
from dunning.views import action_list
from flows.daily import daily_dunning


def run_demo(days: int = 20, as_json: bool = False) -> dict[str, Any]:
    ctx = daily.load_context()
    if not isinstance(ctx.policy.source, CsvSource):
        raise ConfigError(f"{ctx.policy_path}: source: the demo needs a csv source")
    upgrade(ctx.settings.database_url)
    with transaction(ctx.engine) as session:
        if session.execute(select(func.count()).select_from(Run)).scalar_one():
            raise ConfigError(
                "the demo needs an empty database and this one has runs: remove dunning.db "
                "(or point DUNNING_DATABASE_URL elsewhere) and start again"
            )
    customers = resolve_input(ctx.policy_path, ctx.policy.source.customers)
    invoices = resolve_input(ctx.policy_path, ctx.policy.source.invoices)
    dates = list(islice(business_days(DEMO_START, ctx.policy.creditor.country), days))

    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    interactive = console.is_terminal and not as_json
    reports = []
    with Progress(console=console, disable=not interactive, transient=True) as progress:
        bar = progress.add_task("simulating business days", total=len(dates))
        for day in dates:
            write_snapshot(day, customers, invoices)
            report = daily_dunning(as_of=day, dry_run=False)
            reports.append(report)
            progress.advance(bar)
            if not as_json:
                _print_day(report)

    with transaction(ctx.engine) as session:
        stages = dict(session.execute(
            select(Invoice.stage, func.count()).where(Invoice.state == "active")
            .group_by(Invoice.stage)).all())
        states = dict(session.execute(
            select(Invoice.state, func.count()).group_by(Invoice.state)).all())
        pending = action_list(session, "pending_approval")
        calls = open_tasks(session, dates[-1])
    outbox = ctx.settings.outbox_dir
    summary = {
        "days": [r["as_of"] for r in reports],
        "entered": sum((Counter(r["evaluation"]["entered"]) for r in reports), Counter()),
        "emails_sent": sum(r["dispatch"]["sent"] for r in reports),
        "emails_failed": sum(r["dispatch"]["failed"] for r in reports),
        "outbox": str(outbox.resolve()),
        "outbox_files": len(list(outbox.glob("*.eml"))) if outbox.exists() else 0,
        "invoices_by_state": states,
        "active_invoices_by_stage": {str(k): v for k, v in stages.items()},
        "awaiting_approval": [
            {"action_id": a["action_id"], "stage": a["stage"], "customer_id": a["customer_id"],
             "invoice_ids": a["invoice_ids"], "total_open": a["total_open"]}
            for a in pending
        ],
        "outstanding": reports[-1]["outstanding"] if reports else {},
        "calls": [{k: c[k] for k in ("task_id", "customer_id", "customer_name", "phone",
                                     "total_open", "assignee", "due_on")} for c in calls],
    }
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    else:
        _print_summary(summary)
    return summary


def _print_day(report: dict[str, Any]) -> None:
    ev, rec, disp = report["evaluation"], report["reconcile"], report["dispatch"]
    moved = ", ".join(f"{stage} {n}" for stage, n in ev["entered"].items()) or "none"
    proposed = sum(ev["awaiting_approval"].values())
    print(f"{report['as_of']}  entered: {moved}"
          + (f"; proposed for approval: {proposed}" if proposed else "")
          + f"; emails sent {disp['sent']}"
          + (f", failed {disp['failed']}" if disp["failed"] else "")
          + (f"; settled {rec['settled']}" if rec["settled"] else ""))


def _print_summary(summary: dict[str, Any]) -> None:
    print()
    print(f"{len(summary['days'])} business days simulated "
          f"({summary['days'][0]} to {summary['days'][-1]}).")
    print("Invoices that entered each stage:")
    for stage, n in summary["entered"].items():
        print(f"  {stage:<20} {n:>5}")
    print(f"Emails written to {summary['outbox']}: {summary['outbox_files']} "
          f"({summary['emails_failed']} deliveries failed: see `dunning actions --status "
          "failed`)")
    print(f"Invoices by state: {summary['invoices_by_state']}")
    calls = summary["calls"]
    print(f"Open call tasks: {len(calls)} (most overdue money first)")
    for call in calls[:5]:
        print(f"  #{call['task_id']:<5} {call['customer_id']:<6} {call['customer_name'][:32]:<32} "
              f"{call['total_open']:>14}  {call['phone'] or 'no phone'}  due {call['due_on']}")
    for channel, statuses in sorted(summary["outstanding"].items()):
        if channel in ("agency", "injunction"):
            print(f"{channel} actions waiting for their channel (not delivered by this "
                  f"version): {statuses}")
    waiting = summary["awaiting_approval"]
    print(f"Actions waiting for approval: {len(waiting)} (once approved, the next run writes "
          "and sends each formal notice as a PDF)")
    for action in waiting[:10]:
        total = " + ".join(f"{v} {k}" for k, v in action["total_open"].items())
        print(f"  #{action['action_id']:<5} {action['stage']:<18} {action['customer_id']:<6} "
              f"{len(action['invoice_ids'])} invoice(s), {total}")
    if len(waiting) > 10:
        print(f"  ... and {len(waiting) - 10} more: dunning actions --status pending_approval")
    print("Try:")
    if waiting:
        print(f"  dunning approve {waiting[0]['action_id']} --by 'Your Name'")
        print(f"  dunning history {waiting[0]['invoice_ids'][0]}")
    if calls:
        print(f"  dunning call-done {calls[0]['task_id']} --by 'Your Name' --outcome promise "
              f"--until {summary['days'][-1]}")
    print("  dunning calls   |   dunning status   |   dunning actions --status failed")
