"""Time the email dispatch of a first daily run alone, repeatedly, on the same prepared database.

    python bench/dispatch.py --invoices 100000 [--repeat 3] [--outbox DIR]
        [--profile cprofile|pyinstrument]

The database is prepared once per size (bench/out/N/dispatch-ready.db): the pipeline's own pull,
reconcile and evaluate of the portfolio's first day (dunning.daily, no Prefect). Each timed run
copies it (SQLite backup API), empties the outbox and calls `dunning.daily.dispatch` in a fresh
process, as the flow does; the time is the call's wall time, so it includes loading the templates
(compiled once, then read from Jinja's bytecode cache) and Babel's locales, not Python's imports.
"load" is the 1-minute load average when the run started (the machine is shared); "cpu s" is the
CPU time of the dispatching process, steadier than wall time on a busy machine. "bugs" counts
actions failed with an internal error (they would pass unnoticed in the sent/failed counts).
--outbox puts the .eml files elsewhere (e.g. in /dev/shm, to leave the file system's cost out).
With --profile one run is profiled in this process and the top of the profile is printed instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from floor import clone_database, fresh_database, portfolio_days, write_policy

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _environment(folder: Path, url: str, policy: Path, outbox: Path | None = None) -> None:
    os.environ.update({"DUNNING_DATABASE_URL": url, "DUNNING_CONFIG": str(policy),
                       "DUNNING_OUTBOX_DIR": str(outbox or folder / "outbox"),
                       "DUNNING_LETTERS_DIR": str(folder / "letters")})
    os.environ.pop("SENDGRID_API_KEY", None)


def prepare(size: int) -> tuple[Path, Path, date]:
    """The database just before dispatch of the first day, built once per size."""
    day = portfolio_days(size)[0]
    folder = HERE / "out" / f"{size}"
    policy = write_policy(folder, day)
    ready = folder / "dispatch-ready.db"
    as_of = date.fromisoformat(day.name)
    if ready.exists():
        return ready, policy, as_of
    url = fresh_database("sqlite", folder, "dispatch-prepare")
    _environment(folder, url, policy)
    from dunning import daily
    from dunning.db import dispose_engines, upgrade

    upgrade(url)
    ctx = daily.load_context()
    began = time.perf_counter()
    run_id = f"bench-{uuid.uuid4()}"
    daily.check_date(ctx, as_of)
    daily.reconcile(ctx, daily.pull_snapshot(ctx), as_of, run_id)
    for low, high in daily.plan(ctx):
        daily.evaluate(ctx, as_of, run_id, low, high)
    dispose_engines()
    source = Path(url.split(":///", 1)[1])
    clone_database(url, "dispatch-ready")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{source}{suffix}").unlink(missing_ok=True)
    print(f"prepared {ready} in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return ready, policy, as_of


def child(url: str, policy: Path, as_of: date, folder: Path, outbox: Path) -> dict[str, Any]:
    """Dispatch once in this process; the figures as a dict."""
    _environment(folder, url, policy, outbox)
    from dunning import daily

    ctx = daily.load_context()
    began, cpu, workers = time.perf_counter(), _cpu(), _cpu(resource.RUSAGE_CHILDREN)
    result = daily.dispatch(ctx, as_of)
    seconds = time.perf_counter() - began
    cpu = _cpu() - cpu
    workers = _cpu(resource.RUSAGE_CHILDREN) - workers
    from sqlalchemy import func, select

    from dunning.models import Action

    with ctx.engine.connect() as connection:  # a bug shows as failures "internal error: ..."
        internal = connection.execute(select(func.count()).select_from(Action).where(
            Action.last_error.like("internal error%"))).scalar_one()
    return {"seconds": seconds, "cpu": cpu, "workers": workers, "sent": result.sent,
            "failed": result.failed, "internal": internal, "cancelled": result.cancelled}


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    own = resource.getrusage(who)
    return own.ru_utime + own.ru_stime


def fresh_copy(ready: Path, outbox: Path) -> str:
    """A copy of the prepared database, brought to the current schema (it may have been
    prepared by an older version), and an empty outbox."""
    shutil.rmtree(outbox, ignore_errors=True)
    url = clone_database(f"sqlite:///{ready}", "dispatch-run")
    from dunning.db import dispose_engines, upgrade

    upgrade(url)
    dispose_engines()
    return url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", choices=("cprofile", "pyinstrument"))
    parser.add_argument("--outbox", type=Path,
                        help="the outbox folder (default bench/out/N/outbox); e.g. a folder in "
                        "/dev/shm to leave the file system's cost out")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, policy, as_of, folder, outbox = args.child
        print(json.dumps(child(url, Path(policy), date.fromisoformat(as_of), Path(folder),
                               Path(outbox))))
        return 0
    ready, policy, as_of = prepare(args.invoices)
    folder = ready.parent
    outbox = args.outbox or folder / "outbox"
    if args.profile:
        url = fresh_copy(ready, outbox)
        if args.profile == "cprofile":
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            figures = profiler.runcall(child, url, policy, as_of, folder, outbox)
            stats = pstats.Stats(profiler).sort_stats("cumulative")
            stats.print_stats(45)
            stats.sort_stats("tottime").print_stats(30)
        else:
            from pyinstrument import Profiler

            with Profiler(interval=0.0005) as profiler:
                figures = child(url, policy, as_of, folder, outbox)
            print(profiler.output_text(unicode=True, color=False, show_all=False))
        print(json.dumps(figures))
        return 0
    print(f"{'invoices':>9} {'sent':>7} {'failed':>6} {'bugs':>4} {'disp s':>7} {'ms/msg':>7} "
          f"{'cpu s':>7} {'cpu ms/msg':>10} {'workers':>7} {'load':>5}")
    for _ in range(args.repeat):
        url = fresh_copy(ready, outbox)
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, __file__, "--child", url, str(policy),
                               as_of.isoformat(), str(folder), str(outbox)],
                              capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        messages = r["sent"] + r["failed"]
        print(f"{args.invoices:>9} {r['sent']:>7} {r['failed']:>6} {r['internal']:>4} "
              f"{r['seconds']:>7.2f} "
              f"{1000 * r['seconds'] / max(messages, 1):>7.3f} {r['cpu']:>7.2f} "
              f"{1000 * r['cpu'] / max(messages, 1):>10.3f} {r['workers']:>7.2f} {load:>5.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
