"""The plain-SQL floor of the evaluate+record phase: what the daily run's evaluation costs when
done by a script with no ORM and no Prefect, to read the pipeline's cost as a ratio to it.

The database must already hold the portfolio as the pipeline's reconcile leaves it (customers and
invoices in the dunning schema, just before evaluation): the floor is measured on the very state
the pipeline evaluates, not on rows it loaded its own way. `--snapshot` brings a database to that
state first with the pipeline's own `dunning.daily.reconcile` (not timed as part of the floor).
Then, with plain DB-API (`sqlite3` / `psycopg`), in one transaction:

- the selection the pipeline's `facts_for` makes (active invoices due for review, with their
  stage, dates and amounts, the customer holds, the proposals pending or rejected, the proposals
  waiting; every active invoice when the runs before did not evaluate under the same ladder,
  as `ledger.review_cutoff` decides);
- the ladder's decision, with the pure `dunning.ladder.decide` itself (no database in it), so the
  decisions and their reasons are the pipeline's to the character;
- the same writes as `evaluate_batch`: one `action` per (customer, stage) with its
  `action_invoice` rows (or the existing line of a waiting proposal, revived), one `transition`
  per invoice moving stage, the invoice's `stage`/`stage_entered_on`, and each evaluated
  invoice's next review date (`dunning.ladder.review_after`), as `executemany`.

    python bench/floor.py --url sqlite:///bench/out/100000/floor.db --as-of 2026-11-02 \
        [--snapshot bench/out/100000/2026-11-02] [--json]
    python bench/floor.py --compare --invoices 100000 [--db sqlite|postgresql]

`--compare` loads a fresh database with the pipeline's reconcile, clones it, runs the pipeline's
evaluation (`dunning.daily.plan` and `evaluate`: the ORM, without Prefect) on the original and the
floor on the clone, checks that both record the same counts, and prints both, for the first
business day of the portfolio and the next one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from dunning.ladder import Decision, InvoiceFacts, decide, fingerprint, review_after
from dunning.policy import Policy, load_policy

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PG_URL = os.environ.get("DUNNING_BENCH_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_DATABASE = os.environ.get("DUNNING_BENCH_PG_DATABASE", "bench")
SYSTEM = "dunning"
COUNTED = ("invoices", "entered", "awaiting_approval", "actions_created", "transitions")


# --- databases --------------------------------------------------------------------------------


def kind_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def pg_url(database: str) -> str:
    """The SQLAlchemy URL of `database` on the benchmark's PostgreSQL server."""
    base, _, query = PG_URL.partition("?")
    return base.rsplit("/", 1)[0] + f"/{database}" + (f"?{query}" if query else "")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def connect(url: str) -> Any:
    """A DB-API connection, set up as the pipeline's engine sets up its own (dunning/db.py)."""
    if kind_of(url) == "sqlite":
        conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "busy_timeout=30000"):
            conn.execute(f"PRAGMA {pragma}")
        return conn
    import psycopg

    return psycopg.connect(_libpq(url))


def _pg_admin(statements: list[str]) -> None:
    import psycopg

    with psycopg.connect(_libpq(PG_URL), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def fresh_database(kind: str, folder: Path, name: str = "dunning") -> str:
    """An empty database: a new SQLite file in `folder`, or a new PostgreSQL database."""
    if kind == "sqlite":
        db = folder / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{db}"
    database = PG_DATABASE if name == "dunning" else f"{PG_DATABASE}_{name}"
    _pg_admin([f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
               f'CREATE DATABASE "{database}"'])
    return pg_url(database)


def clone_database(url: str, name: str) -> str:
    """A copy of the database at `url` as it stands (SQLite: the backup API; PostgreSQL:
    CREATE DATABASE ... TEMPLATE, which needs no one else connected to the original)."""
    if kind_of(url) == "sqlite":
        source = sqlite_path(url)
        target = source.with_name(f"{name}.db")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return f"sqlite:///{target}"
    original = url.rsplit("/", 1)[1].partition("?")[0]
    database = f"{original}_{name}"
    _pg_admin([f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
               f'CREATE DATABASE "{database}" TEMPLATE "{original}"'])
    return pg_url(database)


def drop_database(url: str) -> None:
    if kind_of(url) == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_path(url)}{suffix}").unlink(missing_ok=True)
        return
    database = url.rsplit("/", 1)[1].partition("?")[0]
    _pg_admin([f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'])


def write_policy(folder: Path, day: Path) -> Path:
    """The shipped policy, reading the snapshot of `day`."""
    data = yaml.safe_load((REPO / "config" / "policy.yaml").read_text(encoding="utf-8"))
    data["source"] = {"kind": "csv", "customers": str(day / "customers.csv"),
                      "invoices": str(day / "invoices.csv")}
    path = folder / f"policy-{day.name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def portfolio_days(size: int) -> list[Path]:
    """The first two business days of the synthetic portfolio of `size` invoices (written by
    bench/portfolio.py if not there yet)."""
    folder = HERE / "out" / f"{size}"
    days = sorted(p for p in folder.glob("2026-*") if p.is_dir()) if folder.exists() else []
    if len(days) < 2:
        subprocess.run([sys.executable, str(HERE / "portfolio.py"), "--customers",
                        str(max(size // 10, 1)), "--invoices", str(size), "--days", "1",
                        "--out", str(folder)], check=True)
        days = sorted(p for p in folder.glob("2026-*") if p.is_dir())
    return days


def pipeline_reconcile(url: str, policy_path: Path, as_of: date) -> dict[str, Any]:
    """Bring the database to the state just before evaluation with the pipeline's own pull and
    reconcile (dunning.daily, no Prefect)."""
    os.environ["DUNNING_DATABASE_URL"] = url
    os.environ["DUNNING_CONFIG"] = str(policy_path)
    from dunning import daily
    from dunning.db import dispose_engines

    ctx = daily.load_context()
    began = time.perf_counter()
    daily.check_date(ctx, as_of)
    snapshot = daily.pull_snapshot(ctx)
    run_id = f"floor-{uuid.uuid4()}"
    # Confirmed: the synthetic next day settles more customers than a young ledger's guard takes.
    result = daily.reconcile(ctx, snapshot, as_of, run_id, accept_mass_settlement=True)
    seconds = time.perf_counter() - began
    dispose_engines()
    return {"seconds": round(seconds, 3), "run_id": run_id, **result.as_dict()}


# --- the floor --------------------------------------------------------------------------------


def _dedupe_key(as_of: date, stage: str, customer_id: int, invoice_ids: list[int]) -> str:
    # The same key as dunning.ledger.dedupe_key, inlined to keep this script free of the ORM.
    digest = hashlib.sha256(",".join(map(str, sorted(invoice_ids))).encode()).hexdigest()[:16]
    return f"{as_of.isoformat()}:{stage}:{customer_id}:{digest}"


class _Dialect:
    """What differs between sqlite3 and psycopg: placeholders, how dates, timestamps and money
    travel, row locks, and where new action ids come from."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sqlite = kind == "sqlite"

    def sql(self, statement: str) -> str:
        return statement if self.sqlite else statement.replace("?", "%s")

    def day(self, value: Any) -> date | None:
        if value is None or isinstance(value, date):
            return value
        return date.fromisoformat(value)

    def day_param(self, value: date | None) -> Any:
        return value.isoformat() if self.sqlite and value is not None else value

    def stamp(self, value: datetime) -> Any:
        # SQLAlchemy's SQLite DATETIME: "YYYY-MM-DD HH:MM:SS.ffffff", UTC, no offset.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if self.sqlite else value

    def money(self, raw: Any) -> Decimal:
        # dunning.models.Money: ten-thousandths in an integer on SQLite, NUMERIC on PostgreSQL.
        return Decimal(raw).scaleb(-4) if self.sqlite else raw


PAGE = 1000  # rows per statement when writing multi-row VALUES (as SQLAlchemy's insertmanyvalues)
# executemany of one-row statements is the floor's way on both databases: multi-row VALUES
# measured no faster on SQLite and slower on PostgreSQL here (see bench/RESULTS.md).
WRITES = {"sqlite": "executemany", "postgresql": "executemany"}


def _insert(cur: Any, d: _Dialect, writes: str, table: str, columns: tuple[str, ...],
            rows: list[tuple[Any, ...]]) -> None:
    """INSERT `rows`: by `executemany` of a one-row statement, or by multi-row VALUES
    statements of PAGE rows."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(columns)) + ")"
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    if writes == "executemany":
        cur.executemany(d.sql(head + one), rows)
        return
    for page in range(0, len(rows), PAGE):
        chunk = rows[page : page + PAGE]
        cur.execute(d.sql(head + ", ".join([one] * len(chunk))), [x for row in chunk for x in row])


def run_floor(url: str, policy: Policy, as_of: date, run_id: str | None = None,
              writes: str | None = None) -> dict[str, Any]:
    """Evaluate and record every active invoice in one transaction with plain SQL; returns the
    counts (named as the run report's `evaluation`) and the seconds of each part. `writes`:
    "executemany" or "values" (multi-row statements); default: the faster on the database."""
    d = _Dialect(kind_of(url))
    writes = writes or WRITES[d.kind]
    run_id = run_id or f"floor-{uuid.uuid4()}"
    conn = connect(url)
    cur = conn.cursor()
    clock: dict[str, float] = {}
    began = time.perf_counter()

    # -- selection (what facts_for, _collectors and the waiting proposals read)
    if d.sqlite:
        cur.execute("BEGIN IMMEDIATE")  # as the pipeline: the write lock from the first read
    ladder = fingerprint(policy)
    active = "state = 'active' AND amount_open > 0"
    if _trusts_review_dates(cur, d, ladder, run_id):
        # Two index ranges, as the pipeline (an OR makes SQLite walk every active invoice).
        active = ("id IN (SELECT id FROM invoice WHERE state = 'active' AND review_on IS NULL "
                  "UNION ALL SELECT id FROM invoice WHERE state = 'active' AND review_on <= "
                  f"'{as_of.isoformat()}') AND amount_open > 0")
    cur.execute(d.sql("UPDATE run SET ladder_fingerprint = ? WHERE id = ?"), (ladder, run_id))
    blocked: dict[int, tuple[set[str], str | None]] = {}
    cur.execute(d.sql(
        "SELECT ai.invoice_id, a.stage, a.status FROM action_invoice ai "
        "JOIN action a ON a.id = ai.action_id "
        f"WHERE ai.invoice_id IN (SELECT id FROM invoice WHERE {active}) "
        "AND a.status IN ('pending_approval', 'rejected') AND ai.dropped_reason IS NULL"))
    for invoice_id, stage, status in cur.fetchall():
        rejected, pending = blocked.get(invoice_id, (set(), None))
        if status == "rejected":
            rejected.add(stage)
        else:
            pending = stage
        blocked[invoice_id] = (rejected, pending)
    cur.execute("SELECT id, hold_until FROM customer WHERE hold_until IS NOT NULL")
    holds = {customer_id: d.day(until) for customer_id, until in cur.fetchall()}
    cur.execute("SELECT id, collector FROM customer WHERE collector IS NOT NULL")
    collectors = dict(cur.fetchall())
    cur.execute(
        "SELECT id, customer_id, due_date, amount, amount_open, stage, stage_entered_on, state, "
        f"currency FROM invoice WHERE {active} ORDER BY customer_id, id"
        + ("" if d.sqlite else " FOR UPDATE"))
    rows = cur.fetchall()
    cur.execute("SELECT id, customer_id, stage FROM action WHERE status = 'pending_approval' "
                "ORDER BY id")
    waiting = {(customer_id, stage): action_id for action_id, customer_id, stage in cur.fetchall()}
    clock["select"] = time.perf_counter() - began

    # -- decision (the pure ladder)
    mark = time.perf_counter()
    no_block: tuple[set[str], str | None] = (set(), None)
    groups: dict[tuple[int, str], list[tuple[InvoiceFacts, Decision, Any]]] = defaultdict(list)
    reviews: list[tuple[Any, int]] = []
    for (invoice_id, customer_id, due_date, amount, amount_open, stage, entered_on, state,
         currency) in rows:
        rejected, pending = blocked.get(invoice_id, no_block)
        facts = InvoiceFacts(
            invoice_id=invoice_id, customer_id=customer_id, due_date=d.day(due_date),
            amount=d.money(amount), amount_open=d.money(amount_open), stage=stage,
            stage_entered_on=d.day(entered_on), state=state,
            rejected_stages=frozenset(rejected), pending_stage=pending,
            hold_until=holds.get(customer_id), currency=currency)
        decision = decide(facts, policy, as_of)
        if decision.stage is not None:
            groups[(customer_id, decision.stage)].append((facts, decision, amount_open))
        review = review_after(facts, decision, policy, as_of) or date.max
        reviews.append((d.day_param(review), invoice_id))
    clock["decide"] = time.perf_counter() - mark

    # -- writes (what evaluate_batch records)
    mark = time.perf_counter()
    now = datetime.now(UTC)
    stamp, today = d.stamp(now), d.day_param(as_of)
    stages = {stage.name: stage for stage in policy.stages}
    counts: dict[str, Any] = {"invoices": len(rows), "entered": Counter(),
                              "awaiting_approval": Counter(), "actions_created": Counter(),
                              "transitions": 0, "links": 0, "links_revived": 0, "grown": 0}
    new = [key for key in groups if key not in waiting]
    if d.sqlite:
        cur.execute("SELECT coalesce(max(id), 0) FROM action")
        first = cur.fetchone()[0] + 1
        ids = list(range(first, first + len(new)))
    elif new:
        cur.execute("SELECT nextval(pg_get_serial_sequence('action', 'id')) "
                    "FROM generate_series(1, %s)", (len(new),))
        ids = [row[0] for row in cur.fetchall()]
    else:
        ids = []
    action_ids = dict(zip(new, ids, strict=True)) | waiting
    due_on = d.day_param(as_of + timedelta(days=policy.phone.due_days))
    actions = []
    for (customer_id, stage_name), action_id in zip(new, ids, strict=True):
        stage = stages[stage_name]
        phone = stage.channel == "phone"
        members = groups[(customer_id, stage_name)]
        actions.append((
            action_id, _dedupe_key(as_of, stage_name, customer_id,
                                   [f.invoice_id for f, _, _ in members]),
            stage.channel, stage_name, stage.template_name, customer_id,
            "pending_approval" if stage.requires_approval else "queued", today, run_id, 0,
            True, stamp, stamp,
            (collectors.get(customer_id) or policy.phone.default_assignee) if phone else None,
            due_on if phone else None))
        counts["actions_created"][stage.channel] += 1
    _insert(cur, d, writes, "action", (
        "id", "dedupe_key", "kind", "stage", "template", "customer_id", "status",
        "business_date", "run_id", "attempts", "retryable", "created_at", "updated_at",
        "assignee", "due_on"), actions)
    grown = sorted({waiting[key] for key in groups if key in waiting})
    counts["grown"] = len(grown)
    known: set[tuple[int, int]] = set()
    if grown:
        marks = ", ".join("?" * len(grown))
        cur.execute(d.sql(f"UPDATE action SET updated_at = ? WHERE id IN ({marks})"),
                    (stamp, *grown))
        cur.execute(d.sql(f"SELECT action_id, invoice_id FROM action_invoice "
                          f"WHERE action_id IN ({marks})"), grown)
        known = set(cur.fetchall())

    links, revived, transitions, moves = [], [], [], []
    for (customer_id, stage_name), members in groups.items():
        action_id = action_ids[(customer_id, stage_name)]
        approval = stages[stage_name].requires_approval
        for facts, decision, raw_open in members:
            if (action_id, facts.invoice_id) in known:
                revived.append((raw_open, decision.days_overdue, decision.reason, action_id,
                                facts.invoice_id))
            else:
                links.append((action_id, facts.invoice_id, raw_open, decision.days_overdue,
                              decision.reason))
            if approval:
                counts["awaiting_approval"][stage_name] += 1
                continue
            counts["entered"][stage_name] += 1
            transitions.append((facts.invoice_id, "stage", facts.stage, stage_name, "active",
                                today, stamp, decision.reason, SYSTEM, run_id, action_id))
            moves.append((stage_name, today, stamp, facts.invoice_id))
    if revived:
        cur.executemany(d.sql(
            "UPDATE action_invoice SET dropped_reason = NULL, amount_open = ?, "
            "days_overdue = ?, reason = ? WHERE action_id = ? AND invoice_id = ?"), revived)
    _insert(cur, d, writes, "action_invoice", (
        "action_id", "invoice_id", "amount_open", "days_overdue", "reason"), links)
    _insert(cur, d, writes, "transition", (
        "invoice_id", "event", "from_stage", "to_stage", "state", "business_date", "at",
        "reason", "actor", "run_id", "action_id"), transitions)
    cur.executemany(d.sql("UPDATE invoice SET review_on = ? WHERE id = ?"), reviews)
    if writes == "executemany":
        cur.executemany(d.sql(
            "UPDATE invoice SET stage = ?, stage_entered_on = ?, updated_at = ? WHERE id = ?"),
            moves)
    else:
        for page in range(0, len(moves), PAGE):
            chunk = moves[page : page + PAGE]
            cur.execute(d.sql(
                "UPDATE invoice SET stage = v.column1, stage_entered_on = v.column2, "
                "updated_at = v.column3 FROM (VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                + ") AS v WHERE invoice.id = v.column4"), [x for row in chunk for x in row])
    clock["write"] = time.perf_counter() - mark
    mark = time.perf_counter()
    if d.sqlite:
        cur.execute("COMMIT")
    else:
        conn.commit()
    clock["commit"] = time.perf_counter() - mark
    seconds = time.perf_counter() - began
    conn.close()

    counts["transitions"] = len(transitions)
    counts["links"] = len(links)
    counts["links_revived"] = len(revived)
    for name in ("entered", "awaiting_approval", "actions_created"):
        counts[name] = dict(counts[name])
    written = len(actions) + len(links) + len(revived) + 2 * len(transitions) + len(reviews)
    return {
        "db": d.kind, "writes": writes, "as_of": as_of.isoformat(), "seconds": round(seconds, 3),
        "parts": {k: round(v, 3) for k, v in clock.items()},
        "invoices_per_s": round(len(rows) / seconds) if seconds else None,
        "rows_written": written,
        "rows_written_per_s": round(written / seconds) if seconds else None,
        "evaluation": counts,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def _trusts_review_dates(cur: Any, d: _Dialect, ladder: str, run_id: str) -> bool:
    """`ledger.trusts_review_dates` for an unsharded run, in plain SQL."""
    cur.execute(d.sql("SELECT shard, status, ladder_fingerprint FROM run "
                      "WHERE ladder_fingerprint IS NOT NULL AND id <> ? "
                      "ORDER BY started_at DESC, id DESC"), (run_id,))
    for shard, status, other in cur.fetchall():
        if other != ladder:
            return False
        if status == "completed" and shard is None:
            return True
    return False


def same_counts(pipeline: dict[str, Any], floor: dict[str, Any]) -> bool:
    """The run report's `evaluation` and the floor's agree on every count."""
    return all(pipeline.get(key) == floor.get(key) for key in COUNTED)


def counts_line(evaluation: dict[str, Any]) -> str:
    entered = sum(evaluation["entered"].values())
    proposed = sum(evaluation["awaiting_approval"].values())
    actions = sum(evaluation["actions_created"].values())
    return (f"{evaluation['invoices']} invoices, {entered} entered ({evaluation['transitions']} "
            f"transitions), {proposed} proposed, {actions} actions")


# --- the comparison without Prefect -----------------------------------------------------------


def pipeline_evaluate(url: str, policy_path: Path, as_of: date, run_id: str) -> dict[str, Any]:
    """The pipeline's evaluation (dunning.daily.plan and evaluate: ORM, batches, no Prefect) in
    the run `run_id`, which it then completes (so the next day's run trusts its review dates)."""
    os.environ["DUNNING_DATABASE_URL"] = url
    os.environ["DUNNING_CONFIG"] = str(policy_path)
    from dunning import daily, ledger
    from dunning.db import dispose_engines, transaction
    from dunning.ledger import BatchResult

    ctx = daily.load_context()
    began = time.perf_counter()
    evaluated = BatchResult()
    for low, high in daily.plan(ctx, None, as_of, run_id):
        evaluated.merge(daily.evaluate(ctx, as_of, run_id, low, high))
    seconds = time.perf_counter() - began
    with transaction(ctx.engine) as session:
        ledger.finish_run(session, run_id, "completed", {})
    dispose_engines()
    return {"seconds": round(seconds, 3), "evaluation": {
        "invoices": evaluated.invoices, "entered": dict(evaluated.entered),
        "awaiting_approval": dict(evaluated.proposed), "actions_created": dict(evaluated.actions),
        "transitions": evaluated.transitions}}


def compare(sizes: list[int], kind: str, writes: str | None = None,
            days_wanted: int = 2) -> int:
    from dunning.db import dispose_engines, upgrade

    ok = True
    print(f"{'invoices':>9} {'day':<10} {'db':<10} {'recon s':>8} {'orm s':>7} {'floor s':>8} "
          f"{'ratio':>6} {'load':>5}  counts")
    for size in sizes:
        days = portfolio_days(size)[:days_wanted]
        folder = HERE / "out" / f"{size}"
        url = fresh_database(kind, folder)
        upgrade(url)
        dispose_engines()
        for day in days:
            as_of = date.fromisoformat(day.name)
            policy_path = write_policy(folder, day)
            load = os.getloadavg()[0]
            reconciled = pipeline_reconcile(url, policy_path, as_of)
            copy = clone_database(url, "floor")
            orm = pipeline_evaluate(url, policy_path, as_of, reconciled["run_id"])
            floor = run_floor(copy, load_policy(policy_path), as_of, reconciled["run_id"],
                              writes=writes)
            drop_database(copy)
            same = same_counts(orm["evaluation"], floor["evaluation"])
            ok = ok and same
            print(f"{size:>9} {day.name:<10} {kind:<10} {reconciled['seconds']:>8.1f} "
                  f"{orm['seconds']:>7.2f} {floor['seconds']:>8.2f} "
                  f"{orm['seconds'] / floor['seconds']:>6.2f} {load:>5.2f}  "
                  f"{'same' if same else 'DIFFERENT'}: pipeline "
                  f"{counts_line(orm['evaluation'])}; floor {counts_line(floor['evaluation'])}"
                  f"; floor parts {floor['parts']}", flush=True)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="SQLAlchemy URL of the database to evaluate")
    parser.add_argument("--as-of", type=date.fromisoformat, help="the business date")
    parser.add_argument("--snapshot", type=Path,
                        help="first reconcile this snapshot folder with the pipeline's reconcile")
    parser.add_argument("--policy", type=Path, help="the policy (default: the shipped one, "
                        "reading --snapshot)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--compare", action="store_true",
                        help="pipeline (ORM, no Prefect) against floor on fresh databases")
    parser.add_argument("--invoices", default="10000,100000", help="with --compare: sizes")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--days", type=int, choices=(1, 2), default=2,
                        help="with --compare: the first business day only, or the next one too")
    parser.add_argument("--writes", choices=("executemany", "values"),
                        help="one-row statements by executemany (default), or multi-row VALUES")
    args = parser.parse_args()
    if args.compare:
        return compare([int(s) for s in args.invoices.split(",")], args.db, args.writes,
                       args.days)
    if not args.url or not args.as_of:
        parser.error("--url and --as-of are needed (or --compare)")
    policy_path = args.policy
    if policy_path is None:
        if args.snapshot:
            policy_path = write_policy(args.snapshot.parent, args.snapshot)
        else:
            policy_path = REPO / "config" / "policy.yaml"
    reconciled = None
    if args.snapshot:
        reconciled = pipeline_reconcile(args.url, policy_path, args.as_of)
    figures = run_floor(args.url, load_policy(policy_path), args.as_of,
                        reconciled["run_id"] if reconciled else None, writes=args.writes)
    figures["reconcile"] = reconciled
    if args.json:
        print(json.dumps(figures))
    else:
        if reconciled:
            print(f"pipeline reconcile (not part of the floor): {reconciled['seconds']:.2f} s")
        print(f"floor on {figures['db']} for {figures['as_of']}: {figures['seconds']:.3f} s "
              f"({figures['parts']}), {figures['invoices_per_s']} invoices/s, "
              f"{figures['rows_written']} rows written ({figures['rows_written_per_s']} rows/s), "
              f"peak RSS {figures['peak_rss_mb']} MB")
        print(f"counts: {counts_line(figures['evaluation'])}; "
              f"{figures['evaluation']['links']} action_invoice rows inserted, "
              f"{figures['evaluation']['links_revived']} revived")
    return 0


if __name__ == "__main__":
    sys.exit(main())
