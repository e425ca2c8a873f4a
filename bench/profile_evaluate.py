"""Profile the pipeline's evaluate+record phase (dunning.daily.plan and evaluate: the ORM, without
Prefect) on the first business day of a synthetic portfolio, with pyinstrument (install it into
the virtualenv only: `.venv/bin/pip install pyinstrument`; it is not a dependency of dunning).

    python bench/profile_evaluate.py --invoices 100000 [--db sqlite|postgresql] [--html FILE]

The database is fresh and brought to the state just before evaluation by the pipeline's own
reconcile (not profiled). Prints pyinstrument's call tree of the evaluation.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path

from floor import (
    HERE,
    drop_database,
    fresh_database,
    pipeline_reconcile,
    portfolio_days,
    write_policy,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML report here")
    parser.add_argument("--interval", type=float, default=0.001, help="sampling interval, s")
    parser.add_argument("--show-all", action="store_true",
                        help="show library frames too (SQLAlchemy's, the drivers')")
    args = parser.parse_args()
    from pyinstrument import Profiler

    from dunning.db import dispose_engines, upgrade

    folder = HERE / "out" / f"{args.invoices}"
    day = portfolio_days(args.invoices)[0]
    as_of = date.fromisoformat(day.name)
    url = fresh_database(args.db, folder, "profile")
    upgrade(url)
    dispose_engines()
    policy = write_policy(folder, day)
    reconciled = pipeline_reconcile(url, policy, as_of)
    print(f"reconcile (not profiled): {reconciled['seconds']:.1f} s; load "
          f"{os.getloadavg()[0]:.2f}")

    from dunning import daily
    from dunning.ledger import BatchResult

    ctx = daily.load_context()
    profiler = Profiler(interval=args.interval)
    began = time.perf_counter()
    profiler.start()
    evaluated = BatchResult()
    for low, high in daily.plan(ctx):
        evaluated.merge(daily.evaluate(ctx, as_of, "profile", low, high))
    profiler.stop()
    print(f"evaluate: {time.perf_counter() - began:.2f} s for {evaluated.invoices} invoices, "
          f"{evaluated.transitions} transitions, {sum(evaluated.actions.values())} actions")
    print(profiler.output_text(unicode=True, color=False, show_all=args.show_all))
    if args.html:
        args.html.write_text(profiler.output_html(), encoding="utf-8")
    dispose_engines()
    drop_database(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
