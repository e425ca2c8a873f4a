"""A run's report for people: markdown for Prefect artifacts, rows for tables, and the terminal
summary printed by `dunning run` and `dunning demo`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
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


def _text(value: Any) -> str:
    """A value for people: nothing known is a dash, never "None"."""
    return "—" if value is None or value == "" else str(value)


def _when(stamp: str | None) -> str:
    """An ISO timestamp as "2026-12-01 14:25:03 UTC"."""
    if not stamp:
        return "—"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_FAILED = {"dispatch": "email", "letters": "formal notice", "agency": "collection agency",
           "injunctions": "injunction file"}


def failure_lines(report: dict[str, Any], key: str) -> list[str]:
    """Each failure of a delivery (`dispatch`, `letters`, `agency`, `injunctions`) or of the
    agency sync (`agency_sync`), with its reason: which action and customer, when known."""
    errors = (report.get(key) or {}).get("errors") or []
    lines = []
    for error in errors:
        if key == "agency_sync":
            where = "" if error.get("case") is None else f" case {error['case']}"
            lines.append(f"agency sync{where}: {_text(error.get('error'))}")
            continue
        about = [f"action {error['action_id']}" if error.get("action_id") is not None else "",
                 f"customer {error['customer_id']}" if error.get("customer_id") else ""]
        where = ", ".join(part for part in about if part)
        lines.append(f"{_FAILED[key]}{f' ({where})' if where else ''}: "
                     f"{_text(error.get('error'))}")
    return lines


def summary_lines(report: dict[str, Any], failures: bool = True) -> list[str]:
    """The run in a few sentences a credit manager reads; with `failures`, each failure's
    reason under its channel."""
    snap, rec, ev, disp = (report["snapshot"], report["reconcile"], report["evaluation"],
                           report["dispatch"])

    def failed(key: str) -> list[str]:
        return [f"  {line}" for line in failure_lines(report, key)] if failures else []

    prefix = "DRY RUN (nothing written or sent): " if report["dry_run"] else ""
    lines = [
        f"{prefix}run of {report['as_of']}: snapshot of {_plural(snap['customers'], 'customer')}"
        f" and {_plural(snap['invoices'], 'invoice')}"
        + (f", {_plural(snap['rejected'], 'rejected row')}" if snap["rejected"] else ""),
    ]
    for dead in report.get("crashed_runs") or []:
        lines.append(f"crashed: run {_text(dead.get('run_id'))} of {_text(dead.get('as_of'))}, "
                     f"started {_when(dead.get('started_at'))}, stopped without finishing "
                     "(its process died): marked crashed")
    back = report.get("recovered") or {}
    if any(back.get(key) for key in ("sent", "requeued", "unknown", "resent")):
        lines.append(
            "recovered claims of a dispatch that died: "
            f"{len(back.get('sent') or [])} written before it died (sent), "
            f"{len(back.get('requeued') or [])} never sent (queued again), "
            f"{len(back.get('unknown') or [])} unknown (see `dunning actions --status unknown`)"
            + (f", {len(back['resent'])} unknown too long (sent again)" if back.get("resent")
               else ""))
    lines.append(
        f"ledger: {rec['invoices_new']} new, {rec['invoices_updated']} changed, "
        f"{rec['settled']} settled, {rec['reopened']} reopened"
        + (f", {_plural(rec['actions_cancelled'], 'undelivered action')} cancelled"
           if rec["actions_cancelled"] else ""))
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
        lines += failed("dispatch")
    letters = report.get("letters") or {}
    if letters.get("sent") or letters.get("failed") or letters.get("errors"):
        lines.append(f"formal notices: {letters['sent']} produced as PDF"
                     + (f" ({letters['post_only']} without an email address: post only)"
                        if letters.get("post_only") else "")
                     + f", {letters['failed']} failed"
                     + (f"; post by registered mail: {', '.join(letters['files'])}"
                        if letters.get("files") else ""))
        lines += failed("letters")
    if letters.get("to_post"):
        lines.append(f"formal notices to post by registered mail: {letters['to_post']} "
                     "(not yet recorded as posted)")
    agency = report.get("agency") or {}
    if agency.get("sent") or agency.get("failed") or agency.get("errors"):
        lines.append(f"collection agency: {agency['sent']} case(s) handed over, "
                     f"{agency['failed']} failed")
        lines += failed("agency")
    synced = report.get("agency_sync") or {}
    if synced.get("cases") or synced.get("errors"):
        collected = ", ".join(f"{v} {k}" for k, v in synced["collected"].items())
        lines.append(f"agency cases: {synced['cases']} asked, collected "
                     f"{collected or 'nothing new'}, {synced['invoices_closed']} invoice(s) "
                     f"closed, {synced['write_off_review']} up for write-off review"
                     + (f", {len(synced['errors'])} error(s)" if synced["errors"] else ""))
        lines += failed("agency_sync")
    court = report.get("injunctions") or {}
    if court.get("sent") or court.get("failed") or court.get("errors"):
        lines.append(f"injunction files: {court['sent']} written, {court['failed']} failed"
                     + (f": {', '.join(court['files'])}" if court.get("files") else ""))
        lines += failed("injunctions")
    for channel, statuses in sorted(report["outstanding"].items()):
        described = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in
                              sorted(statuses.items()))
        lines.append(f"outstanding {channel} actions: {described}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report artifact: the summary, the stages, each failure and each rejected row (a
    value nobody knows is a dash, never "None")."""
    shard = f" (shard {report['shard']})" if report.get("shard") else ""
    out = [f"# Dunning run of {report['as_of']}{shard}", ""]
    out += [f"- {line.strip()}" for line in summary_lines(report, failures=False)]
    rows = stage_rows(report)
    if rows:
        out += ["", "| stage | entered | awaiting approval |", "|---|---:|---:|"]
        out += [f"| {r['stage']} | {r['entered']} | {r['awaiting_approval']} |" for r in rows]
    failures = [line for key in ("dispatch", "letters", "agency", "agency_sync", "injunctions")
                for line in failure_lines(report, key)]
    if failures:
        out += ["", "## Failures", ""]
        out += [f"- {line}" for line in failures]
    if report["rejected_rows"]:
        out += ["", "## Rejected rows", ""]
        out += [f"- `{_text(r.get('file'))}` line {_text(r.get('line'))}, field "
                f"`{_text(r.get('field'))}`: {_text(r.get('message'))}"
                for r in report["rejected_rows"]]
    return "\n".join(out) + "\n"
