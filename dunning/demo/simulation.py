"""`dunning demo`: the sample portfolio through the daily flow over simulated business days."""

from __future__ import annotations

import json
import logging
import statistics
import sys
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning import daily, ledger
from dunning.business_days import business_days
from dunning.calls import open_tasks, record_outcome
from dunning.db import transaction, upgrade
from dunning.demo.agency import running
from dunning.demo.portfolio import DEMO_START, write_snapshot
from dunning.errors import ConfigError
from dunning.models import Action, Invoice, Run, Transition
from dunning.policy import CsvSource, resolve_input
from dunning.settings import given_secrets
from dunning.statuses import ActionStatus, InvoiceState, TransitionEvent
from dunning.views import action_list
from flows.daily import daily_dunning

DEMO_TOKEN = "demo-agency-token"  # the local agency double's; never a real secret
DEMO_TOKEN_ENV = "DUNNING_AGENCY_TOKEN"  # the variable the demo policy names for it
DEMO_RATE = "12.15"  # the sample creditor's terms of sale: ECB rate of 2026-01-01 + 10 points
APPROVED_STAGES = ("letter", "agency", "injunction")
# What the demo's calls give, in turn (a phone stage counts once its task is worked: `reached`
# and an exhausted `no-answer` let escalation go on, the others pause or postpone).
OUTCOMES = ("reached", "no-answer", "promise", "reached", "callback", "paid-claimed")
CALLS_A_DAY = 3  # call tasks the demo's collectors work each day


def _demo_policy(ctx: daily.Context, agency_url: str, folder: Path) -> Path:
    """The policy the demo runs on: the current one, with the local agency double as the
    agency and, where the policy sets none, the sample creditor's contractual interest rate
    (config/rates.yaml does not yet know the ECB rate for 2026-H2)."""
    data = yaml.safe_load(ctx.policy_path.read_text(encoding="utf-8"))
    data["agency"] = (data.get("agency") or {}) | {"url": agency_url, "backoff": 0.2,
                                                  "token_env": DEMO_TOKEN_ENV}
    if ctx.policy.law.rate is None:
        data["law"] = (data.get("law") or {}) | {"rate": DEMO_RATE}
    source = data["source"]
    for key in ("customers", "invoices"):
        source[key] = str(resolve_input(ctx.policy_path, Path(source[key])).resolve())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo-policy.yaml"
    path.write_text("# Written by `dunning demo`: the policy it ran on (see the README).\n"
                    + yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    return path


def _credit_manager(ctx: daily.Context, on: date) -> int:
    """The demo's credit manager approves every proposal of the day."""
    with transaction(ctx.engine) as session:
        pending = session.execute(
            select(col(Action.id)).where(col(Action.status) == ActionStatus.PENDING_APPROVAL,
                                         col(Action.kind).in_(APPROVED_STAGES))
            .order_by(col(Action.id))
        ).scalars().all()
        for action_id in pending:
            ledger.approve(session, ctx.policy, action_id, "Claire (demo credit manager)",
                           "approved in the demo", on)
    return len(pending)


def _collectors(ctx: daily.Context, on: date, turn: int) -> int:
    """The demo's collectors work the first CALLS_A_DAY call tasks due each day."""
    with transaction(ctx.engine) as session:
        due = [t for t in open_tasks(session, on) if t["due_on"] <= on.isoformat()][:CALLS_A_DAY]
        for n, task in enumerate(due):
            outcome = OUTCOMES[(CALLS_A_DAY * turn + n) % len(OUTCOMES)]
            record_outcome(session, ctx.policy, task["task_id"], by=task["assignee"],
                           outcome=outcome, on=on,
                           until=on + timedelta(days=7 if outcome == "promise" else 2)
                           if outcome in ("promise", "callback") else None)
    return len(due)


def run_demo(days: int = 40, as_json: bool = False) -> dict[str, Any]:
    ctx = daily.load_context()
    if not isinstance(ctx.policy.source, CsvSource):
        raise ConfigError(f"{ctx.policy_path}: source: the demo needs a csv source")
    # Each day's line counts the failed deliveries (customers without an email address in the
    # sample); `dunning actions --status failed` says why. No warning per message here.
    logging.getLogger("dunning").setLevel(logging.ERROR)
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
    # The flow is told which policy to run on (a parameter: Prefect records it with the run);
    # the stand-in agency's token is given in process (dunning.settings.given_secrets), never as
    # a flow parameter nor through os.environ.
    with (running(DEMO_TOKEN, give_up_every=3) as agency,
          given_secrets(**{DEMO_TOKEN_ENV: DEMO_TOKEN})):
        policy_path = _demo_policy(ctx, agency.url, customers.parent)
        ctx = daily.load_context(policy_path)
        if not as_json:
            print(f"Running on {policy_path}: the agency is a local stand-in at "
                  f"{agency.url}" + (f"; interest at the agreed rate of {DEMO_RATE} %"
                                     if ctx.policy.law.rate is not None else ""))
        with Progress(console=console, disable=not interactive, transient=True) as bar:
            task = bar.add_task("simulating business days", total=len(dates))
            for turn, day in enumerate(dates):
                write_snapshot(day, customers, invoices)
                report = daily_dunning(as_of=day, dry_run=False, config=str(policy_path))
                report["demo"] = {"approved": _credit_manager(ctx, day),
                                  "calls": _collectors(ctx, day, turn)}
                reports.append(report)
                bar.advance(task)
                if not as_json:
                    _print_day(report)
        cases = {case.id: (case.status, case.collected, case.body["debtor"]["name"])
                 for case in agency.cases.values()}

    with transaction(ctx.engine) as session:
        tallies = _tallies(session)
        voices = messages_per_customer(session)
        pending = action_list(session, ActionStatus.PENDING_APPROVAL)
        calls = open_tasks(session, dates[-1])
    outbox = ctx.settings.outbox_dir
    summary = {
        "policy": str(policy_path),
        "days": [r["as_of"] for r in reports],
        "entered": sum((Counter(r["evaluation"]["entered"]) for r in reports), Counter()),
        "reached": {stage.name: tallies["reached"].get(stage.name, 0)
                    for stage in ctx.policy.stages},
        "emails_sent": sum(r["dispatch"]["sent"] for r in reports),
        "emails_failed": sum(r["dispatch"]["failed"] for r in reports),
        "outbox": str(outbox.resolve()),
        "outbox_files": len(list(outbox.glob("*.eml"))) if outbox.exists() else 0,
        "messages_per_customer": voices,
        "letters": [f for r in reports for f in r["letters"].get("files", [])],
        "agency_cases": [{"agency_case_id": k, "debtor": v[2], "status": v[0],
                          "collected": {ref: f"{amount:.2f}" for ref, amount in v[1].items()}}
                         for k, v in cases.items()],
        "agency_collected": _merged(r["agency_sync"].get("collected", {}) for r in reports),
        "injunction_files": [f for r in reports for f in r["injunctions"].get("files", [])],
        "invoices_by_state": tallies["by_state"],
        "active_invoices_by_stage": tallies["active_by_stage"],
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


def messages_per_customer(session: Session) -> dict[str, Any]:
    """How many messages (emails and letters sent) each customer written to received: the
    fewest, the median, the most."""
    counts = sorted(n for _, n in session.execute(
        select(col(Action.customer_id), func.count())
        .where(col(Action.kind).in_(("email", "letter")),
               col(Action.status) == ActionStatus.SENT)
        .group_by(col(Action.customer_id))))
    if not counts:
        return {"customers": 0, "min": 0, "median": 0, "max": 0}
    return {"customers": len(counts), "min": counts[0], "median": statistics.median(counts),
            "max": counts[-1]}


def _tallies(session: Session) -> dict[str, dict[str, int]]:
    """Invoices by state, active invoices by stage, and the invoices that reached each stage,
    keyed by plain strings (a state read from the database is an InvoiceState, whose repr would
    show in the printed summary)."""
    by_state = {state.value: n for state, n in session.execute(
        select(col(Invoice.state), func.count()).group_by(col(Invoice.state)))}
    active_by_stage = {str(stage): n for stage, n in session.execute(
        select(col(Invoice.stage), func.count())
        .where(col(Invoice.state) == InvoiceState.ACTIVE).group_by(col(Invoice.stage)))}
    reached = {str(stage): n for stage, n in session.execute(
        select(col(Transition.to_stage), func.count(func.distinct(col(Transition.invoice_id))))
        .where(col(Transition.event) == TransitionEvent.STAGE)
        .group_by(col(Transition.to_stage)))}
    return {"by_state": by_state, "active_by_stage": active_by_stage, "reached": reached}


def _merged(parts: Any) -> dict[str, str]:
    total: dict[str, Decimal] = {}
    for part in parts:
        for currency, amount in part.items():
            total[currency] = total.get(currency, Decimal(0)) + Decimal(amount)
    return {currency: f"{amount:.2f}" for currency, amount in sorted(total.items())}


def _print_day(report: dict[str, Any]) -> None:
    ev, rec, disp = report["evaluation"], report["reconcile"], report["dispatch"]
    moved = ", ".join(f"{stage} {n}" for stage, n in ev["entered"].items()) or "none"
    proposed = sum(ev["awaiting_approval"].values())
    parts = [f"{report['as_of']}  entered: {moved}"]
    if proposed:
        parts.append(f"proposed for approval: {proposed}")
    parts.append(f"emails sent {disp['sent']}"
                 + (f", failed {disp['failed']}" if disp["failed"] else ""))
    for key, word in (("letters", "formal notices"), ("agency", "agency cases sent"),
                      ("injunctions", "injunction files")):
        if report[key]["sent"]:
            parts.append(f"{word} {report[key]['sent']}")
    collected = report["agency_sync"].get("collected") or {}
    if collected:
        parts.append("agency collected " + ", ".join(f"{v} {k}" for k, v in collected.items()))
    if rec["settled"]:
        parts.append(f"settled {rec['settled']}")
    demo = report.get("demo") or {}
    if demo.get("approved"):
        parts.append(f"approved by the credit manager {demo['approved']}")
    print("; ".join(parts))


def _print_summary(summary: dict[str, Any]) -> None:
    print()
    print(f"{len(summary['days'])} business days simulated "
          f"({summary['days'][0]} to {summary['days'][-1]}).")
    print("Invoices that reached each stage (the last three once approved):")
    for stage, n in summary["reached"].items():
        print(f"  {stage:<20} {n:>5}")
    print(f"Emails written to {summary['outbox']}: {summary['outbox_files']} "
          f"({summary['emails_failed']} deliveries failed: see `dunning actions --status "
          "failed`)")
    voices = summary["messages_per_customer"]
    if voices["customers"]:
        print(f"Messages per customer written to ({voices['customers']} customers, emails and "
              f"letters): min {voices['min']}, median {voices['median']}, max {voices['max']}")
    print(f"Invoices by state: {summary['invoices_by_state']}")
    calls = summary["calls"]
    print(f"Open call tasks: {len(calls)} (most overdue money first; `dunning calls`)")
    for call in calls[:5]:
        print(f"  #{call['task_id']:<5} {call['customer_id']:<6} {call['customer_name'][:32]:<32} "
              f"{call['total_open']:>14}  {call['phone'] or 'no phone'}  {call['assignee']}, "
              f"due {call['due_on']}")
    letters = summary["letters"]
    print(f"Formal notices written as PDF and emailed: {len(letters)}"
          + (f", e.g. {letters[0]}" if letters else ""))
    cases = summary["agency_cases"]
    by_status = Counter(case["status"] for case in cases)
    collected = ", ".join(f"{v} {k}" for k, v in summary["agency_collected"].items())
    print(f"Cases handed to the collection agency (a local stand-in): {len(cases)} "
          f"({', '.join(f'{n} {s}' for s, n in sorted(by_status.items())) or 'none'}); "
          f"collected {collected or 'nothing yet'}")
    files = summary["injunction_files"]
    print(f"Injunction court files: {len(files)}" + "".join(f"\n  {f}" for f in files[:3]))
    waiting = summary["awaiting_approval"]
    if waiting:
        print(f"Actions waiting for approval: {len(waiting)}")
        for action in waiting[:5]:
            total = " + ".join(f"{v} {k}" for k, v in action["total_open"].items())
            print(f"  #{action['action_id']:<5} {action['stage']:<18} "
                  f"{action['customer_id']:<6} {len(action['invoice_ids'])} invoice(s), {total}")
    print(f"The demo ran on {summary['policy']}; to go on with it:")
    print(f"  export DUNNING_CONFIG={summary['policy']}")
    if calls:
        print(f"  dunning call-done {calls[0]['task_id']} --by 'Your Name' --outcome promise "
              f"--until {summary['days'][-1]}")
    print("  dunning calls   |   dunning status   |   dunning actions --status failed   |   "
          "dunning history INVOICE_ID")
