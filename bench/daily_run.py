"""Time the daily flow on synthetic portfolios: a first run on a fresh database, the next
business day (few changes), and a rerun of that day (nothing to do). Each run is its own process,
so its peak RSS is its own. Prints one line per run; figures go to bench/RESULTS.md by hand.

    python bench/daily_run.py --invoices 10000,100000 [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PG_URL = os.environ.get("DUNNING_BENCH_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def child(as_of: str) -> None:
    """Run the daily flow once in this process and print its report's figures as JSON."""
    from datetime import date

    from flows.daily import daily_dunning

    began = time.perf_counter()
    report = daily_dunning(as_of=date.fromisoformat(as_of))
    print(json.dumps({
        "timings": report["timings"],
        "flow_seconds": round(time.perf_counter() - began, 3),
        "invoices": report["snapshot"]["invoices"],
        "entered": sum(report["evaluation"]["entered"].values()),
        "sent": report["dispatch"]["sent"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


def _policy(folder: Path, day: Path) -> Path:
    data = yaml.safe_load((REPO / "config" / "policy.yaml").read_text(encoding="utf-8"))
    data["source"] = {"kind": "csv", "customers": str(day / "customers.csv"),
                      "invoices": str(day / "invoices.csv")}
    path = folder / f"policy-{day.name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _fresh_database(kind: str, folder: Path) -> str:
    if kind == "sqlite":
        db = folder / "dunning.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{db}"
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS bench CASCADE"))
        connection.execute(text("CREATE SCHEMA bench"))
    engine.dispose()
    return f"{PG_URL}?options=-csearch_path%3Dbench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", default="10000,100000")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    from dunning.db import upgrade

    print(f"{'invoices':>9} {'run':<9} {'pull':>6} {'recon':>6} {'eval':>6} {'disp':>6} "
          f"{'report':>6} {'flow s':>7} {'inv/s':>8} {'sent':>7} {'RSS MB':>7}")
    for size in (int(s) for s in args.invoices.split(",")):
        folder = HERE / "out" / f"{size}"
        days = sorted(p for p in folder.glob("2026-*") if p.is_dir()) if folder.exists() else []
        if len(days) < 2:
            subprocess.run([sys.executable, str(HERE / "portfolio.py"), "--customers",
                            str(max(size // 10, 1)), "--invoices", str(size), "--days", "1",
                            "--out", str(folder)], check=True)
            days = sorted(p for p in folder.glob("2026-*") if p.is_dir())
        url = _fresh_database(args.db, folder)
        upgrade(url)
        for label, day in (("first", days[0]), ("next day", days[1]), ("rerun", days[1])):
            env = os.environ | {
                "DUNNING_DATABASE_URL": url, "DUNNING_CONFIG": str(_policy(folder, day)),
                "DUNNING_OUTBOX_DIR": str(folder / "outbox"),
                "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
            env.pop("SENDGRID_API_KEY", None)
            done = subprocess.run([sys.executable, __file__, "--child", day.name], env=env,
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            r = json.loads(done.stdout.strip().splitlines()[-1])
            t = r["timings"]
            busy = sum(t.values())
            print(f"{size:>9} {label:<9} {t['pull']:>6.1f} {t['reconcile']:>6.1f} "
                  f"{t['evaluate']:>6.1f} {t['dispatch']:>6.1f} {t['report']:>6.1f} "
                  f"{r['flow_seconds']:>7.1f} {r['invoices'] / busy:>8.0f} {r['sent']:>7} "
                  f"{r['peak_rss_mb']:>7}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
