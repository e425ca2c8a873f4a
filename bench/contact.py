"""How often each customer is written to over a month of business days on the synthetic
portfolio: the pipeline's own steps (pull, reconcile, evaluate, dispatch; no Prefect) run day
after day on bench/portfolio.py's snapshots, then the emails sent are counted per customer.

    python bench/contact.py [--invoices 10000] [--days 22]

Prints, over the customers written to at least once: emails per customer over the days (mean,
median, max), the most one customer got in one calendar month and how many times a customer got
more than four in one, and the pairs of emails to one customer closer than seven days. Runs
on any version of dunning that has these steps (to compare with an earlier commit:
PYTHONPATH=<its checkout> python bench/contact.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import date
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def portfolio(invoices: int, days: int) -> list[Path]:
    folder = HERE / "out" / f"contact-{invoices}-{days}"
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, str(HERE / "portfolio.py"), "--customers",
                        str(max(invoices // 10, 1)), "--invoices", str(invoices), "--days",
                        str(days - 1), "--out", str(folder)], check=True)
        (folder / "done").touch()
    return sorted(p for p in folder.iterdir() if p.is_dir())


def run(days: list[Path], work: Path) -> Path:
    """Every day of the month through the pipeline; the database's path."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db = work / "dunning.db"
    os.environ.update({"DUNNING_DATABASE_URL": f"sqlite:///{db}",
                       "DUNNING_OUTBOX_DIR": str(work / "outbox"),
                       "DUNNING_LETTERS_DIR": str(work / "letters")})
    os.environ.pop("SENDGRID_API_KEY", None)
    from dunning import daily
    from dunning.db import dispose_engines, upgrade

    upgrade(os.environ["DUNNING_DATABASE_URL"])
    data = yaml.safe_load((REPO / "config" / "policy.yaml").read_text(encoding="utf-8"))
    for day in days:
        data["source"] = {"kind": "csv", "customers": str(day / "customers.csv"),
                          "invoices": str(day / "invoices.csv")}
        policy = work / "policy.yaml"
        policy.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        os.environ["DUNNING_CONFIG"] = str(policy)
        ctx = daily.load_context()
        as_of = date.fromisoformat(day.name)
        run_id = f"bench-{uuid.uuid4()}"
        daily.check_date(ctx, as_of)
        daily.reconcile(ctx, daily.pull_snapshot(ctx), as_of, run_id, True)
        for low, high in daily.plan(ctx, None, as_of, run_id):
            daily.evaluate(ctx, as_of, run_id, low, high)
        sent = daily.dispatch(ctx, as_of).sent
        print(f"{as_of}: {sent} emails", file=sys.stderr, flush=True)
        dispose_engines()
        for kind in OPEN:
            most[kind] = max(most[kind], _most_open(db, kind))
    return db


# A customer's open formal notices (proposed, approved, or waiting for post) and open call
# tasks: at most one each, every day.
OPEN = {"letter": ("pending_approval", "approved", "queued"),
        "phone": ("pending_approval", "approved", "queued")}
most: dict[str, int] = dict.fromkeys(OPEN, 0)


def _most_open(db: Path, kind: str) -> int:
    with sqlite3.connect(db) as connection:
        marks = ", ".join("?" * len(OPEN[kind]))
        row = connection.execute(
            f"SELECT max(n) FROM (SELECT count(*) AS n FROM action WHERE kind = ? "
            f"AND status IN ({marks}) GROUP BY customer_id)", (kind, *OPEN[kind])).fetchone()
    return int(row[0] or 0)


def report(db: Path, days: int) -> None:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT customer_id, business_date FROM action WHERE kind = 'email' "
            "AND status = 'sent' ORDER BY customer_id, business_date").fetchall()
    by_customer: dict[int, list[date]] = defaultdict(list)
    for customer, day in rows:
        by_customer[customer].append(date.fromisoformat(day))
    counts = [len(days_) for days_ in by_customer.values()]
    months: dict[tuple[int, int, int], int] = defaultdict(int)  # (customer, year, month)
    for customer, days_ in by_customer.items():
        for day in days_:
            months[(customer, day.year, day.month)] += 1
    close = sum(1 for days_ in by_customer.values()
                for a, b in zip(days_, days_[1:], strict=False) if (b - a).days < 7)
    print(f"{days} business days: {len(rows)} emails to {len(counts)} customers; per customer "
          f"mean {statistics.mean(counts):.2f}, median {statistics.median(counts):g}, "
          f"max {max(counts)}; in one calendar month: max {max(months.values())}, "
          f"more than 4: {sum(1 for n in months.values() if n > 4)}; "
          f"two emails < 7 days apart: {close}; most open on one day for one customer: "
          f"{most['letter']} formal notice(s), {most['phone']} call task(s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=10000)
    parser.add_argument("--days", type=int, default=22, help="business days (22: a month)")
    args = parser.parse_args()
    days = portfolio(args.invoices, args.days)
    db = run(days, HERE / "out" / f"contact-run-{uuid.uuid4().hex[:8]}")
    report(db, len(days))
    shutil.rmtree(db.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
