"""Time the daily flow on synthetic portfolios: a first run on a fresh database, the next
business day (few changes), and a rerun of that day (nothing to do). Each run is its own process,
so its peak RSS is its own. Prints one line per run; figures go to bench/RESULTS.md by hand.

    python bench/daily_run.py --invoices 10000,100000 [--db sqlite|postgresql] [--no-floor]
                              [--ephemeral]

The runs report to one Prefect server started for the benchmark (as deployments report to the
project's server); `--ephemeral` lets each run start Prefect's temporary server instead, which
adds 5-18 s to every "flow s".

Next to each run's evaluate+record phase it prints the plain-SQL floor (bench/floor.py) for the
same work: before the run, the database is cloned (SQLite: backup API; PostgreSQL: CREATE
DATABASE ... TEMPLATE); after it, the clone is brought to the state just before evaluation by
the pipeline's own reconcile, and the floor evaluates and records it with plain SQL, in its own
process. "x floor" is the flow's evaluate phase divided by the floor's seconds; the floor must
record the same counts as the run report's `evaluation` (checked; a difference fails the run).
On PostgreSQL each size gets a fresh database (DUNNING_BENCH_PG_DATABASE, default `bench`) on the
server of DUNNING_BENCH_PG_URL. "load" is the 1-minute load average when the run started.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from floor import (
    clone_database,
    counts_line,
    drop_database,
    fresh_database,
    portfolio_days,
    same_counts,
    write_policy,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def child(as_of: str) -> None:
    """Run the daily flow once in this process and print its report's figures as JSON."""
    from datetime import date

    from flows.daily import daily_dunning

    began = time.perf_counter()
    # The synthetic next day settles invoices of 45% of the customers, more than the
    # mass-settlement guard takes from a young ledger: confirmed, as an operator would.
    report = daily_dunning(as_of=date.fromisoformat(as_of), accept_mass_settlement=True)
    print(json.dumps({
        "timings": report["timings"],
        "flow_seconds": round(time.perf_counter() - began, 3),
        "invoices": report["snapshot"]["invoices"],
        "evaluation": report["evaluation"],
        "entered": sum(report["evaluation"]["entered"].values()),
        "sent": report["dispatch"]["sent"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


def _floor(url: str, policy: Path, day: Path) -> dict[str, Any]:
    """The floor on the clone of the state before the run (bench/floor.py, its own process)."""
    done = subprocess.run([sys.executable, str(HERE / "floor.py"), "--url", url, "--snapshot",
                           str(day), "--policy", str(policy), "--as-of", day.name, "--json"],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"floor.py failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", default="10000,100000")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--no-floor", action="store_true",
                        help="do not measure the plain-SQL floor of the evaluate phase")
    parser.add_argument("--ephemeral", action="store_true",
                        help="let each run start Prefect's temporary server (5-18 s a run) "
                        "instead of using one Prefect server for the whole benchmark, as a "
                        "deployment does")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    if args.ephemeral:
        return measure(args, {})
    with prefect_server() as api_url:
        return measure(args, {"PREFECT_API_URL": api_url})


@contextmanager
def prefect_server(port: int = 4299) -> Iterator[str]:
    """A Prefect server of its own (SQLite in a scratch PREFECT_HOME), as in production: flow
    runs then report to it instead of each starting a temporary one."""
    import urllib.request

    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        "PREFECT_LOGGING_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the Prefect server did not start within 60 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def measure(args: argparse.Namespace, server_env: dict[str, str]) -> int:
    from dunning.db import dispose_engines, upgrade

    floors = not args.no_floor
    print(f"{'invoices':>9} {'run':<9} {'pull':>6} {'recon':>6} {'eval':>6} {'disp':>6} "
          f"{'report':>6} {'flow s':>7} {'inv/s':>8} {'sent':>7} {'RSS MB':>7}"
          + (f" {'floor s':>7} {'x floor':>7}" if floors else "") + f" {'load':>5}")
    differences = []
    for size in (int(s) for s in args.invoices.split(",")):
        folder = HERE / "out" / f"{size}"
        days = portfolio_days(size)
        url = fresh_database(args.db, folder)
        upgrade(url)
        dispose_engines()  # CREATE DATABASE ... TEMPLATE wants no one connected to it
        shutil.rmtree(folder / "outbox", ignore_errors=True)
        for label, day in (("first", days[0]), ("next day", days[1]), ("rerun", days[1])):
            policy = write_policy(folder, day)
            env = os.environ | server_env | {
                "DUNNING_DATABASE_URL": url, "DUNNING_CONFIG": str(policy),
                "DUNNING_OUTBOX_DIR": str(folder / "outbox"),
                "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
            env.pop("SENDGRID_API_KEY", None)
            load = os.getloadavg()[0]
            before = clone_database(url, "floor") if floors else None
            done = subprocess.run([sys.executable, __file__, "--child", day.name], env=env,
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            r = json.loads(done.stdout.strip().splitlines()[-1])
            t = r["timings"]
            busy = sum(t.values())
            line = (f"{size:>9} {label:<9} {t['pull']:>6.1f} {t['reconcile']:>6.1f} "
                    f"{t['evaluate']:>6.1f} {t['dispatch']:>6.1f} {t['report']:>6.1f} "
                    f"{r['flow_seconds']:>7.1f} {r['invoices'] / busy:>8.0f} {r['sent']:>7} "
                    f"{r['peak_rss_mb']:>7}")
            if before is not None:
                f = _floor(before, policy, day)
                drop_database(before)
                line += f" {f['seconds']:>7.2f} {t['evaluate'] / f['seconds']:>7.1f}"
                if not same_counts(r["evaluation"], f["evaluation"]):
                    differences.append(f"{size} {label}: pipeline "
                                       f"{counts_line(r['evaluation'])}; floor "
                                       f"{counts_line(f['evaluation'])}")
            print(f"{line} {load:>5.2f}", flush=True)
    for difference in differences:
        print(f"COUNTS DIFFER: {difference}", file=sys.stderr)
    if floors and not differences:
        print("floor: same counts as the pipeline for every run (invoices evaluated, entered "
              "per stage, proposed, actions per channel, transitions)")
    return 1 if differences else 0


if __name__ == "__main__":
    raise SystemExit(main())
