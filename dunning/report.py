"""A run's report for people: markdown for Prefect artifacts, rows for tables, and the terminal
summary printed by `dunning run` and `dunning demo`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Stopwatch:
    """Wall time of each phase of a run, in seconds (reported, and read by the benchmarks)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.perf_counter() - start, 3)


def stage_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    evaluation = report["evaluation"]
    stages = list(evaluation["entered"]) + [
        s for s in evaluation["awaiting_approval"] if s not in evaluation["entered"]
    ]
    return [
        {"stage": stage, "entered": evaluation["entered"].get(stage, 0),
         "awaiting_approval": evaluation["awaiting_approval"].get(stage, 0)}
        for stage in stages
    ]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The run in a few sentences a credit manager reads."""
    snap, rec, ev, disp = (report["snapshot"], report["reconcile"], report["evaluation"],
                           report["dispatch"])
    prefix = "DRY RUN (nothing written or sent): " if report["dry_run"] else ""
    lines = [
        f"{prefix}run of {report['as_of']}: snapshot of {_plural(snap['customers'], 'customer')}"
        f" and {_plural(snap['invoices'], 'invoice')}"
        + (f", {_plural(snap['rejected'], 'rejected row')}" if snap["rejected"] else ""),
        f"ledger: {rec['invoices_new']} new, {rec['invoices_updated']} changed, "
        f"{rec['settled']} settled, {rec['reopened']} reopened"
        + (f", {_plural(rec['actions_cancelled'], 'undelivered action')} cancelled"
           if rec["actions_cancelled"] else ""),
    ]
    if ev["entered"] or ev["awaiting_approval"]:
        for row in stage_rows(report):
            parts = []
            if row["entered"]:
                parts.append(f"{_plural(row['entered'], 'invoice')} entered")
            if row["awaiting_approval"]:
                parts.append(f"{_plural(row['awaiting_approval'], 'invoice')} proposed, "
                             "awaiting approval")
            lines.append(f"  {row['stage']}: {', '.join(parts)}")
    else:
        lines.append("  no invoice moved up the ladder")
    if report["dry_run"]:
        lines.append(f"email: {disp['would_send']} would be sent")
    else:
        lines.append(f"email: {disp['sent']} sent, {disp['failed']} failed"
                     + (f", {disp['in_flight']} in flight from an earlier run (check them)"
                        if disp["in_flight"] else ""))
    letters = report.get("letters") or {}
    if letters.get("sent") or letters.get("failed"):
        lines.append(f"formal notices: {letters['sent']} sent as PDF, {letters['failed']} failed"
                     + (f"; post by registered mail: {', '.join(letters['files'])}"
                        if letters.get("files") else ""))
    agency = report.get("agency") or {}
    if agency.get("sent") or agency.get("failed") or agency.get("errors"):
        lines.append(f"collection agency: {agency['sent']} case(s) handed over, "
                     f"{agency['failed']} failed")
    synced = report.get("agency_sync") or {}
    if synced.get("cases") or synced.get("errors"):
        collected = ", ".join(f"{v} {k}" for k, v in synced["collected"].items())
        lines.append(f"agency cases: {synced['cases']} asked, collected "
                     f"{collected or 'nothing new'}, {synced['invoices_closed']} invoice(s) "
                     f"closed, {synced['write_off_review']} up for write-off review"
                     + (f", {len(synced['errors'])} error(s)" if synced["errors"] else ""))
    court = report.get("injunctions") or {}
    if court.get("sent") or court.get("failed"):
        lines.append(f"injunction files: {court['sent']} written, {court['failed']} failed"
                     + (f": {', '.join(court['files'])}" if court.get("files") else ""))
    for channel, statuses in sorted(report["outstanding"].items()):
        described = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in
                              sorted(statuses.items()))
        lines.append(f"outstanding {channel} actions: {described}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    out = [f"# Dunning run of {report['as_of']}", ""]
    out += [f"- {line.strip()}" for line in summary_lines(report)]
    rows = stage_rows(report)
    if rows:
        out += ["", "| stage | entered | awaiting approval |", "|---|---:|---:|"]
        out += [f"| {r['stage']} | {r['entered']} | {r['awaiting_approval']} |" for r in rows]
    failures = [e for key in ("dispatch", "letters", "agency", "injunctions")
                for e in (report.get(key) or {}).get("errors", [])]
    failures += [{"action_id": "-", "customer_id": f"agency case {e['case']}",
                  "error": e["error"]} for e in (report.get("agency_sync") or {}).get(
                      "errors", [])]
    if failures:
        out += ["", "## Delivery failures", ""]
        out += [f"- action {e['action_id']} ({e['customer_id']}): {e['error']}"
                for e in failures]
    if report["rejected_rows"]:
        out += ["", "## Rejected rows", ""]
        out += [f"- `{r['file']}` line {r['line']}, field `{r['field']}`: {r['message']}"
                for r in report["rejected_rows"]]
    return "\n".join(out) + "\n"
