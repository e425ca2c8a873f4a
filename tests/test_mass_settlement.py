"""The mass-settlement guard's rule, figures in, objection out (dunning/mass_settlement.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dunning import daily
from dunning.context import load_context
from dunning.errors import SnapshotError
from dunning.mass_settlement import Book, Settled, objection
from dunning.policy import Policy
from dunning.shards import Shard
from tests.conftest import Portfolio, base_policy, query
from tests.helpers import cli, counts, day, run


def _policy(**changes: Any) -> Policy:
    data = base_policy(Path("/nonexistent"))
    data.update(changes)
    return Policy.model_validate(data)


def days(*customers: int) -> list[Settled]:
    """Recent runs settling invoices of these numbers of customers, newest first."""
    return [Settled(2 * n, n, Decimal(1000 * n)) for n in customers]


NORMAL = days(2, 1, 3, 0, 2, 1, 2, 3, 1, 2)  # a ledger of 40 customers, two weeks
BOOK = Book(245, 40, Decimal("300000"))

CASES = [
    # (id, today, book, history, export empty, objection contains or None)
    ("nothing settles", Settled(0, 0, Decimal(0)), BOOK, NORMAL, False, None),
    ("a normal day", Settled(5, 3, Decimal("6000")), BOOK, NORMAL, False, None),
    ("one customer pays its 300 invoices", Settled(302, 2, Decimal("400000")),
     Book(545, 41, Decimal("700000")), NORMAL, False, None),
    ("cut at 60%: 16 customers", Settled(96, 16, Decimal("120000")), BOOK, NORMAL, False,
     "of 16 of the 40 customers; a normal day here settles invoices of 3 customers (the busiest "
     "of the last 10 days with a run; that day settled 6 invoices, 3,000.00 open), and "
     "settlement_guard accepts up to 9"),
    ("cut on a young ledger", Settled(96, 16, Decimal("120000")), BOOK, [], False,
     "a normal day here settles invoices of 4 customers (10% of the 40 customers with open "
     "invoices, the ledger being young: 0 days with payments on record), and settlement_guard "
     "accepts up to 12"),
    ("a young ledger's busy day", Settled(30, 10, Decimal("30000")), BOOK, days(1), False, None),
    ("the first payments after quiet weeks", Settled(9, 8, Decimal("9000")), BOOK,
     days(*[0] * 20), False, None),
    ("a young ledger's days like the one confirmed yesterday", Settled(40, 18, Decimal("9000")),
     BOOK, [Settled(45, 20, Decimal("9000"), confirmed=True), *days(0)], False, None),
    ("a confirmed day does not raise an established ledger's bar",
     Settled(96, 16, Decimal("120000")), BOOK,
     [Settled(45, 20, Decimal("9000"), confirmed=True), *NORMAL], False,
     "a normal day here settles invoices of 3 customers (the busiest of the last 10 days"),
    ("a week of payments after a week without a run", Settled(30, 15, Decimal("30000"), days=5),
     BOOK, NORMAL, False, None),
    ("a cut after a week without a run", Settled(96, 22, Decimal("120000"), days=5), BOOK,
     NORMAL, False, "3 customers (the busiest of the last 10 days with a run; that day settled "
     "6 invoices, 3,000.00 open); this snapshot gathers the 5 business days since the last run, "
     "and settlement_guard accepts up to 21"),
    ("a normal day measured per business day", Settled(20, 8, Decimal("9000")), BOOK,
     [Settled(30, 12, Decimal("9000"), days=5), *days(2, 1, 2, 1, 2)], False,
     "a normal day here settles invoices of 2.4 customers (the busiest of the last 6 days with "
     "a run; that day settled 30 invoices, 9,000.00 open), and settlement_guard accepts up to "
     "7"),
    ("a busy ledger's busier day", Settled(200, 80, Decimal("90000")),
     Book(2000, 400, Decimal("3000000")), days(30, 25, 28, 22, 30), False, None),
    ("every open invoice of a tiny ledger, by its 5 customers",
     Settled(5, 5, Decimal("5000")), Book(5, 5, Decimal("5000")), [], False, None),
    ("an empty export of a tiny ledger", Settled(5, 5, Decimal("5000")),
     Book(5, 5, Decimal("5000")), [], True,
     "the snapshot holds no invoice at all, and would settle every one of the 5 open invoices"),
    ("an empty export of a large ledger", Settled(10**6, 10**5, Decimal(10**9)),
     Book(10**6, 10**5, Decimal(10**9)), NORMAL, True, "holds no invoice at all"),
    ("more than max_settled_share of the invoices", Settled(600, 60, Decimal("100000")),
     Book(1000, 100, Decimal("1000000")), days(30, 20), False,
     "the snapshot would settle 600 of the 1000 open invoices (100,000.00 of 1,000,000.00 "
     "open), of 60 of the 100 customers: more than max_settled_share (50%)"),
    ("more than max_settled_share of the amount", Settled(100, 20, Decimal("600000")),
     Book(1000, 100, Decimal("1000000")), days(10), False, "more than max_settled_share"),
]


@pytest.mark.parametrize(("today", "book", "history", "empty", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_the_guard_objects_to_what_does_not_look_like_a_day_of_payments(
        today: Settled, book: Book, history: list[Settled], empty: bool,
        expected: str | None) -> None:
    found = objection(today, book, history, empty, _policy())
    if expected is None:
        assert found is None
    else:
        assert found is not None and expected in found


def test_the_settings_move_the_line() -> None:
    cut = Settled(96, 16, Decimal("120000"))
    assert objection(cut, BOOK, NORMAL, False, _policy()) is not None
    lenient = _policy(settlement_guard={"factor": 6})
    assert objection(cut, BOOK, NORMAL, False, lenient) is None
    strict = _policy(settlement_guard={"min_customers": 0, "factor": 1})
    assert objection(Settled(8, 4, Decimal(1)), BOOK, NORMAL, False, strict) is not None
    with pytest.raises(ValueError, match="extra"):
        _policy(settlement_guard={"factr": 6})


# --- the guard in the daily run ---------------------------------------------------------------
# Mornings are reconciled through dunning.daily (as the flow's tasks do) to build a history
# quickly; the refusals that matter to a person go through `dunning run`.

def morning(as_of: date, run_id: str, accept: bool = False) -> Any:
    ctx = load_context()
    daily.check_date(ctx, as_of)
    return daily.reconcile(ctx, daily.pull_snapshot(ctx), as_of, run_id,
                           accept_mass_settlement=accept)


def _ledger(portfolio: Portfolio, customers: int = 40, invoices: int = 6) -> None:
    """`customers` customers of `invoices` invoices each, the export ordered by customer (as
    most accounting exports are: a cut then loses whole customers)."""
    for c in range(customers):
        portfolio.customer(f"C{c:02d}")
        for n in range(invoices):
            portfolio.invoice(f"C{c:02d}-{n}", f"C{c:02d}", due=day(-10 - n),
                              amount=f"{100 + c}.00")


def _two_weeks(portfolio: Portfolio) -> None:
    """Day 0, then five mornings on which two customers pay an invoice each."""
    portfolio.write()
    morning(day(0), "d0")
    for d in range(1, 6):
        portfolio.remove(f"C{d:02d}-0")
        portfolio.pay(f"C{d + 20:02d}-0")
        portfolio.write()
        assert morning(day(d), f"d{d}").settled == 2


def _cut(portfolio: Portfolio, share: float) -> None:
    """The export stops on a line boundary after `share` of its invoice lines."""
    path = portfolio.folder / "invoices.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = 1 + int((len(lines) - 1) * share)
    path.write_text("".join(lines[:keep]), encoding="utf-8")


def _open(db_url: str) -> int:
    return query(db_url, "SELECT count(*) FROM invoice WHERE state != 'closed'")[0][0]


@pytest.mark.usefixtures("prefect_server")
def test_an_export_cut_at_60_percent_is_refused_until_confirmed(portfolio: Portfolio,
                                                                 db_url: str) -> None:
    """Today: settles 93 of 230 open invoices, exit 0 (under max_settled_share's 50%)."""
    _ledger(portfolio)
    _two_weeks(portfolio)
    _cut(portfolio, 0.6)
    before = (_open(db_url), counts(db_url))
    for extra in ((), ("--dry-run",)):
        result = cli("run", "--as-of", day(6).isoformat(), *extra)
        assert result.exit_code == 2, (extra, result.stdout, result.stderr)
        (message,) = [line for line in result.stderr.splitlines()
                      if line.startswith("dunning: ")]
        assert message == (
            "dunning: the snapshot would settle 93 of the 230 open invoices (12,251.00 of "
            "27,550.00 open), of 16 of the 40 customers; a normal day here settles invoices of "
            "2 customers (the busiest of the last 6 days with a run; that day settled 2 invoices, "
            "230.00 open), and settlement_guard accepts up to 6 (factor 3, at least "
            "min_customers 5): "
            "an export cut short looks just like this. Check the export, and confirm that these "
            "payments are real if they are. Nothing was changed. To confirm them, run again "
            "with --accept-mass-settlement.")
        assert (_open(db_url), counts(db_url)) == before
    report = run(day(6), "--accept-mass-settlement")
    assert report["reconcile"]["settled"] == 93
    (figures,) = query(db_url, "SELECT settled_invoices, settled_customers, mass_settlement "
                               "FROM run WHERE business_date = :d", d=day(6))
    assert tuple(figures) == (93, 16, True)
    # The confirmed day is not a normal one: the next cut is measured against the old days.
    _cut(portfolio, 0.6)
    with pytest.raises(SnapshotError, match="of 2 customers .the busiest of the last 6 days "
                                                   "with a run"):
        morning(day(7), "d7")


@pytest.mark.parametrize("cut", [0.6, 0.52], ids=["cut at 60%", "cut at 52%"])
def test_a_short_export_never_settles_the_ledger(portfolio: Portfolio, db_url: str,
                                                 cut: float) -> None:
    """Today: 93 and 109 of the 230 open invoices settled, exit 0 (a header-only file is
    refused by max_settled_share here; a small ledger's is not: below)."""
    _ledger(portfolio)
    _two_weeks(portfolio)
    _cut(portfolio, cut)
    with pytest.raises(SnapshotError, match="an export cut short looks just like this"):
        morning(day(6), "d6")
    assert _open(db_url) == 230
    assert query(db_url, "SELECT count(*) FROM run WHERE id = 'd6'")[0][0] == 0


@pytest.mark.parametrize(("ledger", "expected"), [
    ((1, 20), "holds no invoice at all, and would settle every one of the 20 open invoices"),
    ((5, 1), "holds no invoice at all, and would settle every one of the 5 open invoices"),
    ((40, 6), "of 16 of the 40 customers; a normal day here settles invoices of 4 customers "
              "(10% of the 40 customers with open invoices, the ledger being young: 0 days with "
              "payments on record), and settlement_guard accepts up to 12"),
], ids=["header only, 20 invoices", "header only, 5 invoices", "cut at 60%, second morning"])
def test_a_young_ledger_is_guarded_too(portfolio: Portfolio, db_url: str,
                                       ledger: tuple[int, int], expected: str) -> None:
    """Today: a header-only file settles all of a 20-invoice ledger (under the floor of 20)."""
    customers, invoices = ledger
    _ledger(portfolio, customers, invoices)
    portfolio.write()
    morning(day(0), "d0")
    _cut(portfolio, 0.6 if customers == 40 else 0.0)
    with pytest.raises(SnapshotError) as error:
        morning(day(1), "d1")
    assert expected in str(error.value)
    assert _open(db_url) == customers * invoices


def test_a_column_given_twice_settles_nothing(portfolio: Portfolio, db_url: str) -> None:
    """Today: a second amount_open column of zeros settled every open invoice."""
    _ledger(portfolio, 10, 3)
    portfolio.write()
    morning(day(0), "d0")
    path = portfolio.folder / "invoices.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([lines[0] + ",amount_open"] + [line + ",0" for line in lines[1:]])
                    + "\n", encoding="utf-8")
    with pytest.raises(SnapshotError, match="columns 8 .'amount_open'. and 9 .'amount_open'."):
        morning(day(1), "d1")
    assert _open(db_url) == 30


def test_one_customer_paying_its_300_invoices_is_a_plausible_day(portfolio: Portfolio,
                                                                  db_url: str) -> None:
    """300 of 530 open invoices settle, but of 3 customers: payments, not a cut export."""
    _ledger(portfolio)
    for n in range(300):
        portfolio.invoice(f"BIG-{n:03d}", "C39", due=day(-20), amount="50.00")
    _two_weeks(portfolio)
    for n in range(300):
        portfolio.remove(f"BIG-{n:03d}")
    portfolio.remove("C06-0")
    portfolio.pay("C26-0")
    portfolio.write()
    result = morning(day(6), "d6")
    assert result.settled == 302
    assert _open(db_url) == 530 - 302
    assert tuple(query(db_url, "SELECT settled_invoices, settled_customers, settled_amount, "
                               "mass_settlement FROM run WHERE id = 'd6'")[0])[:2] == (302, 3)


def test_each_shard_is_measured_against_its_own_open_invoices_and_days(
        portfolio: Portfolio, db_url: str) -> None:
    """A cut that takes 8 of shard 1's customers is refused there; the same export is a
    plausible day for shard 2, which lost nothing."""
    one, two = Shard(1, 2), Shard(2, 2)
    _ledger(portfolio)
    portfolio.write()
    ctx = load_context()
    for shard in (one, two):
        daily.reconcile(ctx, daily.pull_snapshot(ctx, shard), day(0), f"d0-{shard.index}",
                        shard=shard)
    gone = [c for c in sorted(portfolio.customers) if one.holds(c)][:8]
    for customer in gone:
        for n in range(6):
            portfolio.remove(f"{customer}-{n}")
    portfolio.write()
    with pytest.raises(SnapshotError, match="would settle 48 of the .* of 8 of the"):
        daily.reconcile(ctx, daily.pull_snapshot(ctx, one), day(1), "d1-1", shard=one)
    assert daily.reconcile(ctx, daily.pull_snapshot(ctx, two), day(1), "d1-2",
                           shard=two).settled == 0
    assert _open(db_url) == 240
