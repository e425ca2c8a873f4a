"""Incremental evaluation decides exactly what evaluating every invoice decides.

Two ledgers are fed the same snapshots, the same people's decisions and the same policy change
over three months of business days; one evaluates only the invoices due for review, the other
every active invoice (DUNNING_EVALUATE_ALL). Day by day they must record the same transitions
and the same actions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, text

from dunning import calls, daily, ledger, pauses
from dunning.business_days import business_days
from dunning.coltypes import utcnow
from dunning.context import Context
from dunning.db import get_engine, transaction, upgrade
from dunning.ladder import fingerprint
from dunning.ledger import BatchResult
from dunning.models import Action, Run
from dunning.policy import load_policy
from dunning.settings import Settings
from dunning.shards import Shard
from tests.conftest import Portfolio, base_policy, pg_schema

START = date(2026, 11, 2)  # a Monday
SEED = 20261102


@pytest.fixture(autouse=True)
def plain_letters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped templates, with a formal notice of one blank page: the ledgers deliver
    their notices (the ladder waits for that) without spending two seconds of WeasyPrint on
    each of a hundred letters nobody reads here (tests/test_letters.py reads them)."""
    import shutil

    from dunning.resources import templates_dir

    folder = tmp_path / "templates"
    shutil.copytree(templates_dir(), folder)
    (folder / "letters" / "formal_notice.html.j2").write_text(
        "<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    monkeypatch.setenv("DUNNING_TEMPLATES_DIR", str(folder))


@pytest.fixture
def twin_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second empty database of the same kind as `db_url`."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'twin.db'}"
        upgrade(url)
        yield url
        return
    with pg_schema() as url:
        yield url


@dataclass
class Ledger:
    """One database and the way it evaluates; what each run evaluated."""

    url: str
    everything: bool
    folder: Path
    evaluated: list[int] = field(default_factory=list)

    def context(self) -> Context:
        path = self.folder / "policy.yaml"
        mine = "full" if self.everything else "incremental"
        settings = Settings(database_url=self.url, config=path,
                            outbox_dir=self.folder / mine / "outbox",
                            letters_dir=self.folder / mine / "letters", dispatch_workers=0,
                            evaluate_all=self.everything)
        return Context(settings=settings, policy_path=path, policy=load_policy(path))

    def run(self, as_of: date, run_id: str) -> BatchResult:
        """A day's run as the flow does it (the agency aside): reconcile, plan, evaluate, then
        deliver the emails and formal notices (the ladder goes on once they are)."""
        ctx = self.context()
        daily.check_date(ctx, as_of)
        daily.reconcile(ctx, daily.pull_snapshot(ctx), as_of, run_id,
                        accept_mass_settlement=True)
        result = BatchResult()
        for low, high in daily.plan(ctx, None, as_of, run_id):
            result.merge(daily.evaluate(ctx, as_of, run_id, low, high))
        for kind in ("email", "letter"):
            daily.dispatch(ctx, as_of, kind=kind)
        with transaction(ctx.engine) as session:
            ledger.finish_run(session, run_id, "completed", {})
        self.evaluated.append(result.invoices)
        return result

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with transaction(get_engine(self.url)) as session:
            return [tuple(row) for row in session.execute(text(sql), params).all()]


def recorded(book: Ledger, as_of: date) -> dict[str, Any]:
    """What a day left behind, by stable keys (external ids, dedupe keys), in a stable order."""
    return {
        "transitions": sorted(book.rows(
            "SELECT i.external_id, t.event, t.from_stage, t.to_stage, t.state, t.reason, "
            "t.detail, t.actor, a.dedupe_key FROM transition t "
            "JOIN invoice i ON i.id = t.invoice_id LEFT JOIN action a ON a.id = t.action_id "
            "WHERE t.business_date = :d", d=as_of), key=repr),
        "actions": sorted(book.rows(
            "SELECT a.dedupe_key, a.kind, a.stage, a.status, c.external_id, a.business_date "
            "FROM action a JOIN customer c ON c.id = a.customer_id"), key=repr),
        "links": sorted(book.rows(
            "SELECT a.dedupe_key, i.external_id, l.amount_open, l.days_overdue, l.reason, "
            "l.dropped_reason FROM action_invoice l JOIN action a ON a.id = l.action_id "
            "JOIN invoice i ON i.id = l.invoice_id"), key=repr),
        "invoices": sorted(book.rows(
            "SELECT external_id, stage, stage_entered_on, state, state_reason, paused_until "
            "FROM invoice"), key=repr),
    }


def counts(result: BatchResult) -> tuple[Any, ...]:
    return (dict(result.entered), dict(result.proposed), dict(result.actions),
            result.transitions)


class Churn:
    """The accounting system's export changing day after day: payments in full and in part,
    invoices disappearing and coming back, new invoices, corrected due dates and amounts,
    invoices booked to another customer."""

    def __init__(self, portfolio: Portfolio, rng: random.Random) -> None:
        self.portfolio, self.rng, self.next = portfolio, rng, 0
        self.gone: dict[str, dict[str, str]] = {}
        for n in range(24):
            portfolio.customer(f"C{n:02d}")

    def new_invoice(self, around: date, low: int, high: int) -> None:
        rng = self.rng
        ref = f"I{self.next:04d}"
        self.next += 1
        amount = rng.choice(["300.00", "800.00", "800.00", "2500.00", "2500.00", "-150.00"])
        self.portfolio.invoice(ref, f"C{rng.randrange(24):02d}",
                               due=around + timedelta(days=rng.randint(low, high)),
                               amount=amount, currency="JPY" if rng.random() < 0.06 else "EUR")

    def start(self, as_of: date) -> None:
        for _ in range(110):
            self.new_invoice(as_of, -110, 20)
        self.portfolio.write()

    def day(self, as_of: date) -> None:
        rng, invoices = self.rng, self.portfolio.invoices
        for ref in sorted(invoices):
            row = invoices[ref]
            roll = rng.random()
            if roll < 0.025:
                row["amount_open"] = "0.00"  # paid in full
            elif roll < 0.045 and Decimal(row["amount_open"]) > 500:
                row["amount_open"] = rng.choice(["450.00", "520.00", "980.00"])  # in part
            elif roll < 0.055:
                self.gone[ref] = invoices.pop(ref)  # no longer in the export
            elif roll < 0.062:
                due = date.fromisoformat(row["due_date"]) + timedelta(days=rng.randint(-9, 9))
                row["due_date"] = due.isoformat()  # corrected due date
            elif roll < 0.066:
                row["customer_id"] = f"C{rng.randrange(24):02d}"  # booked to another customer
            elif roll < 0.070 and Decimal(row["amount"]) > 0:
                row["amount"] = row["amount_open"] = str(Decimal(row["amount"]) + 700)
            elif roll < 0.075 and row["amount_open"] == "0.00":
                row["amount_open"] = row["amount"]  # the payment bounced
        for ref in sorted(self.gone):
            if rng.random() < 0.05:
                invoices[ref] = self.gone.pop(ref)  # back in the export
        for _ in range(rng.randint(1, 4)):
            self.new_invoice(as_of, -25, 15)
        self.portfolio.write()


def _policy(folder: Path) -> dict[str, Any]:
    # The reference rate of 2026-H2 is not in config/rates.yaml yet: a contractual rate applies.
    return base_policy(folder) | {"law": {"rate": "12.15"}}


def people(books: list[Ledger], rng: random.Random, on: date) -> None:
    """What credit managers and collectors do after a run, chosen from the first ledger's
    state by stable keys and done identically in each."""
    first = books[0]
    proposals = [key for key, in first.rows(
        "SELECT dedupe_key FROM action WHERE status = 'pending_approval' ORDER BY dedupe_key")]
    tasks = [key for key, in first.rows(
        "SELECT dedupe_key FROM action WHERE kind = 'phone' AND status IN ('queued', 'approved') "
        "ORDER BY dedupe_key")]
    active = [ref for ref, in first.rows(
        "SELECT external_id FROM invoice WHERE state = 'active' ORDER BY external_id")]
    disputed = [ref for ref, in first.rows(
        "SELECT external_id FROM invoice WHERE state = 'paused' AND state_reason = 'dispute' "
        "ORDER BY external_id")]
    customers = [ref for ref, in first.rows("SELECT external_id FROM customer ORDER BY 1")]

    steps: list[tuple[str, str, dict[str, Any]]] = []
    for key in proposals:
        roll = rng.random()
        if roll < 0.35:
            steps.append(("approve", key, {}))
        elif roll < 0.55:
            steps.append(("reject", key, {}))
    for key in tasks:
        roll = rng.random()
        if roll < 0.12:
            steps.append(("call", key, {"outcome": "promise",
                                        "until": on + timedelta(days=rng.randint(1, 9))}))
        elif roll < 0.18:
            steps.append(("call", key, {"outcome": "dispute", "reason": "wrong quantity"}))
        elif roll < 0.26:
            steps.append(("call", key, {"outcome": "paid-claimed"}))
        elif roll < 0.36:
            steps.append(("call", key, {"outcome": "no-answer"}))
        elif roll < 0.8:
            steps.append(("call", key, {"outcome": "reached"}))
    if active and rng.random() < 0.3:
        steps.append(("dispute", rng.choice(active), {}))
    for ref in disputed:
        if rng.random() < 0.15:
            steps.append(("resolve", ref, {"credit_note": rng.random() < 0.3}))
    if rng.random() < 0.12:
        steps.append(("hold", rng.choice(customers),
                      {"until": on + timedelta(days=rng.randint(0, 12))}))

    for book in books:
        ctx = book.context()
        for what, key, options in steps:
            with transaction(ctx.engine) as session:
                if what in ("approve", "reject", "call"):
                    action_id = session.execute(
                        select(Action.id).where(Action.dedupe_key == key)).scalar_one()
                if what == "approve":
                    ledger.approve(session, ctx.policy, action_id, "Claire", None, on)
                elif what == "reject":
                    ledger.reject(session, action_id, "Claire", "not this one", on)
                elif what == "call":
                    calls.record_outcome(session, ctx.policy, action_id, by="Nadia", on=on,
                                         **options)
                elif what == "dispute":
                    pauses.dispute(session, key, by="Claire", reason="goods returned", on=on)
                elif what == "resolve":
                    pauses.resolve(session, key, by="Claire", on=on, **options)
                else:
                    pauses.hold(session, key, by="Claire", reason="restructuring", on=on,
                                **options)


def change_the_ladder(folder: Path) -> None:
    """Earlier reminders, shorter gaps, a lower agency minimum, no approval for notices; and a
    pre-due reminder only for large invoices, approved first (those below wait for it until
    the due date passes it over)."""
    path = folder / "policy.yaml"
    policy = yaml.safe_load(path.read_text(encoding="utf-8"))
    for stage in policy["stages"]:
        if stage["name"] == "pre_due_reminder":
            stage |= {"min_amount": 1000, "requires_approval": True}
        elif stage["name"] == "friendly_reminder":
            stage["days_after_due"] = 1
        elif stage["name"] == "second_reminder":
            stage["min_days_since_previous"] = 4
        elif stage["name"] == "formal_notice":
            stage["requires_approval"] = False
        elif stage["name"] == "collection_agency":
            stage["min_amount"] = 300
    path.write_text(yaml.safe_dump(policy, allow_unicode=True), encoding="utf-8")


# On SQLite only, for the suite's time budget (61 s on PostgreSQL): the selection and writes
# are the same SQL on both, and the next test checks a rerun and a ladder change on both.
@pytest.mark.sqlite_only
def test_incremental_evaluation_records_what_full_evaluation_records(
    db_url: str, twin_url: str, tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump(_policy(tmp_path), allow_unicode=True), encoding="utf-8")
    incremental = Ledger(db_url, everything=False, folder=tmp_path)
    full = Ledger(twin_url, everything=True, folder=tmp_path)
    rng = random.Random(SEED)
    churn = Churn(Portfolio(tmp_path), rng)
    days = business_days(START, "FR")
    events: set[str] = set()
    stages: set[str] = set()
    for n in range(66):
        as_of = next(days)
        if n == 0:
            churn.start(as_of)
        else:
            churn.day(as_of)
        if n == 33:
            change_the_ladder(tmp_path)
        reruns = 2 if n % 6 == 5 else 1
        for attempt in range(reruns):
            run_id = f"{as_of}-{attempt}"
            mine, theirs = incremental.run(as_of, run_id), full.run(as_of, run_id)
            assert counts(mine) == counts(theirs), f"{as_of} run {attempt}"
            people([incremental, full], rng, as_of)
            ours = recorded(incremental, as_of)
            assert ours == recorded(full, as_of), f"{as_of} run {attempt}"
        events.update(e for _, e, *_ in ours["transitions"])
        stages.update(to for _, e, _, to, *_ in ours["transitions"] if e == "stage")

    # The story went through what can change an answer of the ladder...
    assert {"stage", "settled", "reopened", "paused", "resumed", "promise_broken",
            "rejected"} <= events, events
    assert {"pre_due_reminder", "friendly_reminder", "second_reminder", "phone_call",
            "formal_notice", "collection_agency"} <= stages, stages
    # ...while the incremental ledger evaluated a fraction of what the other did.
    assert sum(incremental.evaluated) < sum(full.evaluated) / 3, (incremental.evaluated,
                                                                  full.evaluated)


def test_a_rerun_evaluates_nothing_and_a_new_ladder_everything(
    db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump(_policy(tmp_path), allow_unicode=True), encoding="utf-8")
    book = Ledger(db_url, everything=False, folder=tmp_path)
    churn = Churn(Portfolio(tmp_path), random.Random(SEED))
    churn.start(START)
    active = len(churn.portfolio.invoices)
    first = book.run(START, "first")
    assert 0 < first.invoices <= active
    assert book.run(START, "rerun").invoices == 0
    nothing_due = book.rows("SELECT count(*) FROM invoice WHERE state = 'active' AND "
                            "amount_open > 0 AND (review_on IS NULL OR review_on <= :d)",
                            d=START)
    assert nothing_due == [(0,)]
    change_the_ladder(tmp_path)
    assert book.run(START, "new ladder").invoices == first.invoices
    assert book.run(START + timedelta(days=1), "next").invoices < first.invoices / 2


def test_review_dates_are_trusted_after_a_completed_run_under_the_same_ladder(
    db_url: str, tmp_path: Path
) -> None:
    """Going back from the latest run: another ladder means no; a completed run covering the
    shard under this ladder means yes; runs that failed, or covered other customers, are
    passed over."""
    engine = get_engine(db_url)
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump(_policy(tmp_path), allow_unicode=True), encoding="utf-8")
    this = fingerprint(load_policy(tmp_path / "policy.yaml"))
    one, two = Shard(1, 2), Shard(2, 2)

    def runs(*rows: tuple[str | None, str, str | None]) -> None:
        with transaction(engine) as session:
            session.execute(Run.__table__.delete())  # type: ignore[attr-defined]
            for n, (shard, status, ladder) in enumerate(rows):
                session.add(Run(id=f"r{n}", business_date=START, status=status, shard=shard,
                                ladder_fingerprint=ladder,
                                started_at=utcnow() + timedelta(seconds=n)))

    def trusted(shard: Shard | None = None) -> bool:
        with transaction(engine) as session:
            return ledger.trusts_review_dates(session, this, "now", shard)

    runs()
    assert not trusted()
    runs((None, "completed", this))
    assert trusted() and trusted(one)
    runs((None, "completed", "other"), (None, "completed", this))
    assert trusted()
    runs((None, "completed", this), (None, "failed", "other"))
    assert not trusted()
    runs((None, "completed", "other"), (None, "completed", this), (None, "failed", this),
         (None, "completed", None))
    assert trusted()  # the failed run evaluated under this ladder too; the last evaluated none
    runs((None, "completed", "other"), (None, "failed", this))
    assert not trusted()
    runs((None, "completed", "other"), ("1/2", "completed", this))
    assert trusted(one) and not trusted(two) and not trusted()
    runs((None, "completed", this), ("2/3", "completed", "other"))
    assert not trusted(one) and not trusted()
    runs((None, "completed", this), ("2/2", "completed", "other"))
    assert trusted(one) and not trusted(two)
    with transaction(engine) as session:
        assert not ledger.trusts_review_dates(session, this, None)
