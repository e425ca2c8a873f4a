"""The snapshot streamed into a staging table: the same rows, rejects and ledger as reading it
into memory, duplicates found in SQL, nothing left behind."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, select

from dunning import ledger, staging
from dunning.db import get_engine, transaction
from dunning.errors import SnapshotError
from dunning.models import Invoice
from dunning.policy import CsvSource, load_policy
from dunning.shards import Shard
from dunning.sources import pull, stage
from tests.conftest import base_policy

CUSTOMERS = """customer_id,name,email,language,country
C1,Dupont SA,compta@dupont.example,fr,FR
C2,Bad Language BV,ap@bad.example,xx,NL
C3,Müller GmbH,ap@mueller.example,de,DE
C4,Janssens NV,ap@janssens.example,nl,BE
"""
HEADER = "invoice_id,customer_id,number,issue_date,due_date,currency,amount,amount_open\n"
INVOICES = HEADER + (
    "I1,C1,F-1,2026-09-01,2026-10-01,EUR,100.50,100.50\n"   # 2
    "I2,C3,F-2,,2026-10-15,EUR,200,150.25\n"                # 3
    "I3,C2,F-3,,2026-10-15,EUR,10,10\n"                     # 4: rejected customer
    "I1,C1,F-1b,,2026-10-01,EUR,999,999\n"                  # 5: duplicate of a good line
    "I4,C1,F-4,,2026-13-01,EUR,10,10\n"                     # 6: bad date
    "I4,C4,F-4b,,2026-11-01,EUR,10,10\n"                    # 7: duplicate of a bad line
    "I5,C4,F-5,,2026-11-01,EUR,300,0\n"                     # 8: nothing open
    "I6,C3,F-6,,2026-11-02,EUR,42,42\n"                     # 9
    "I5,C9,F-5c,,xx,EUR,1,2\n"                              # 10: duplicate and bad
    ",C1,F-7,,2026-11-01,EUR,5,5\n"                         # 11: no id
)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    (tmp_path / "invoices.csv").write_text(INVOICES, encoding="utf-8")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(base_policy(tmp_path)), encoding="utf-8")
    return policy


def _staged_rows(db_url: str, table: str) -> dict[str, tuple[int, bool]]:
    t = staging.staged_table(table)
    with get_engine(db_url).connect() as connection:
        return {key: (line, bool(valid)) for key, line, valid in connection.execute(
            select(t.c.external_id, t.c.line, t.c.valid))}


def _staged_tables(db_url: str) -> list[str]:
    return [name for name in inspect(get_engine(db_url)).get_table_names()
            if name.startswith(staging.PREFIX)]


def test_streamed_rejects_and_rows_match_reading_into_memory(files: Path, db_url: str) -> None:
    policy = load_policy(files)
    assert isinstance(policy.source, CsvSource)
    memory = pull(policy, files)
    staged = stage(policy, files, get_engine(db_url))
    # The same rejects, in file order, with the same words: a duplicated line is reported as a
    # duplicate (of the first line, good or bad), whatever else is wrong with it.
    assert [r.as_dict() for r in staged.rejects] == [r.as_dict() for r in memory.rejects]
    lines = [(r.file, r.line, r.field) for r in staged.rejects]
    assert lines == [("customers.csv", 3, "language"), ("invoices.csv", 4, "customer_id"),
                     ("invoices.csv", 5, "invoice_id"), ("invoices.csv", 6, "due_date"),
                     ("invoices.csv", 7, "invoice_id"), ("invoices.csv", 10, "invoice_id"),
                     ("invoices.csv", 11, "invoice_id")]
    assert "first on line 6" in staged.rejects[4].message
    assert staged.invoices == len(memory.invoices) == 4
    assert staged.seen == len(memory.seen_invoice_ids) == 6
    assert [c.external_id for c in staged.customers] == ["C1", "C3", "C4"]
    # Valid rows are the good ones; a rejected id is kept as seen (never settles an invoice).
    assert _staged_rows(db_url, staged.table) == {
        "I1": (2, True), "I2": (3, True), "I3": (4, False), "I4": (6, False),
        "I5": (8, True), "I6": (9, True)}


def test_values_over_their_limits_are_rejected_the_same_way_streamed(files: Path,
                                                                   db_url: str) -> None:
    """Over-long values that look fine otherwise: the fast path must send them to the full
    check, and a too-long id is never staged (PostgreSQL would refuse it, aborting the run)."""
    long_id, long_number = "J" * 101, "N" * 10_000
    (files.parent / "invoices.csv").write_text(HEADER + (
        f"{long_id},C1,F-1,,2026-10-01,EUR,10,10\n"        # 2
        f"I7,C1,{long_number},,2026-10-01,EUR,10,10\n"     # 3
        f"{long_id},C1,F-1,,2026-10-01,EUR,10,10\n"        # 4: the same id again
        f"{'I' * 100},C1,{'N' * 100},,2026-10-01,EUR,10,10\n"  # 5: at the limits
    ), encoding="utf-8")
    policy = load_policy(files)
    memory = pull(policy, files)
    staged = stage(policy, files, get_engine(db_url))
    assert [r.as_dict() for r in staged.rejects] == [r.as_dict() for r in memory.rejects]
    assert [(r.file, r.line, r.field, r.key) for r in staged.rejects] == [
        ("customers.csv", 3, "language", "C2"), ("invoices.csv", 2, "invoice_id", None),
        ("invoices.csv", 3, "number", "I7"), ("invoices.csv", 4, "invoice_id", None)]
    assert _staged_rows(db_url, staged.table) == {"I7": (3, False), "I" * 100: (5, True)}


def test_reconciling_a_staged_snapshot_equals_an_in_memory_one(files: Path, db_url: str,
                                                               tmp_path: Path) -> None:
    policy = load_policy(files)
    engine = get_engine(db_url)
    staged = stage(policy, files, engine)
    with transaction(engine) as session:
        result = ledger.reconcile(session, staged, date(2026, 11, 2), None)
    staging.drop(engine, staged.table)
    assert result.invoices_new == 4 and result.customers_new == 3
    with transaction(engine) as session:
        rows = {i.external_id: (i.number, i.due_date, str(i.amount), str(i.amount_open),
                                i.state, i.state_reason)
                for i in session.execute(select(Invoice)).scalars()}
    assert rows == {
        "I1": ("F-1", date(2026, 10, 1), "100.50", "100.50", "active", None),
        "I2": ("F-2", date(2026, 10, 15), "200.00", "150.25", "active", None),
        "I5": ("F-5", date(2026, 11, 1), "300.00", "0.00", "closed", "settled"),
        "I6": ("F-6", date(2026, 11, 2), "42.00", "42.00", "active", None),
    }
    # The same export read into memory changes nothing more: the two paths agree.
    with transaction(engine) as session:
        again = ledger.reconcile(session, pull(policy, files), date(2026, 11, 3), None)
    assert (again.invoices_new, again.invoices_updated, again.settled) == (0, 0, 0)
    assert _staged_tables(db_url) == []


def test_changes_settlements_and_reopenings_from_a_staged_snapshot(files: Path,
                                                                  db_url: str) -> None:
    policy = load_policy(files)
    engine = get_engine(db_url)
    with transaction(engine) as session:
        ledger.reconcile(session, pull(policy, files), date(2026, 11, 2), None)
    (files.parent / "invoices.csv").write_text(HEADER + (
        "I1,C1,F-1,2026-09-01,2026-10-01,EUR,100.50,0\n"      # paid
        "I2,C4,F-2,,2026-10-20,EUR,200,150.25\n"              # moved and due later
        "I5,C4,F-5,,2026-11-01,EUR,300,120\n"                 # reopened
        "I7,C1,F-7,,2026-11-20,EUR,70,70\n"                   # new
    ), encoding="utf-8")                                      # I6: gone
    staged = stage(policy, files, engine)
    with transaction(engine) as session:
        result = ledger.reconcile(session, staged, date(2026, 11, 3), None)
    assert (result.invoices_new, result.invoices_updated, result.settled, result.reopened) == \
        (1, 3, 2, 1)
    with transaction(engine) as session:
        rows = {i.external_id: (i.customer_id, i.due_date, str(i.amount_open), i.state)
                for i in session.execute(select(Invoice)).scalars()}
        ids = dict(session.execute(select(Invoice.external_id, Invoice.customer_id)).all())
    assert rows["I1"][2:] == ("0.00", "closed")
    assert rows["I2"][1:] == (date(2026, 10, 20), "150.25", "active")
    assert ids["I2"] == ids["I5"]  # now C4's
    assert rows["I5"][2:] == ("120.00", "active")
    assert rows["I6"][3] == "closed"
    assert rows["I7"][2:] == ("70.00", "active")


def test_a_shard_stages_its_own_invoices_and_sees_every_id(files: Path, db_url: str) -> None:
    policy = load_policy(files)
    shard = Shard(1, 2)
    staged = stage(policy, files, get_engine(db_url), shard)
    rows = _staged_rows(db_url, staged.table)
    mine = {"I1": "C1", "I2": "C3", "I5": "C4", "I6": "C3"}
    assert {key for key, (_, valid) in rows.items() if valid} == \
        {key for key, customer in mine.items() if shard.holds(customer)}
    assert set(rows) == {"I1", "I2", "I3", "I4", "I5", "I6"}
    assert [c.external_id for c in staged.customers] == \
        [c for c in ("C1", "C3", "C4") if shard.holds(c)]
    staging.drop(get_engine(db_url), staged.table)


def test_a_file_that_breaks_half_way_leaves_no_table(files: Path, db_url: str) -> None:
    # More good lines than a loading chunk: some rows are committed before the bad byte.
    good = "".join(f"I{n},C1,F-{n},,2026-10-01,EUR,1,1\n" for n in range(25_000))
    (files.parent / "invoices.csv").write_bytes(
        (HEADER + good).encode() + b"J2,C1,\xff\xfe,,x,EUR,1,1\n")
    with pytest.raises(SnapshotError, match="not valid UTF-8"):
        stage(load_policy(files), files, get_engine(db_url))
    assert _staged_tables(db_url) == []


def test_a_crashed_runs_table_is_dropped_by_the_next_pull(files: Path, db_url: str) -> None:
    engine = get_engine(db_url)
    old = f"{staging.PREFIX}all_20200101000000_deadbeef"
    other_shard = f"{staging.PREFIX}1of2_20200101000000_deadbeef"
    with engine.begin() as connection:
        staging.create(connection, old)
        staging.create(connection, other_shard)
    staged = stage(load_policy(files), files, engine)
    assert sorted(_staged_tables(db_url)) == sorted([staged.table, other_shard])


_CELLS = {
    "invoice_id": st.sampled_from(["I1", "I2", "I3", "", "  I4 ", "I" * 100, "J" * 101]),
    "customer_id": st.sampled_from(["C1", "C3", "C4", "C2", "C404", "", "C" * 101]),
    "number": st.sampled_from(["", "F-1", "Fäcture 2", "N" * 100, "N" * 101]),
    "issue_date": st.sampled_from(["", "2026-09-01", "2026-10-31", "2026-02-30", "20260901"]),
    "due_date": st.sampled_from(["2026-10-01", "2026-10-31", "", "2026-13-01", "1/10/2026"]),
    "currency": st.sampled_from(["", "EUR", "chf", "EURO", "E1"]),
    "amount": st.sampled_from(["100", "100.5", "-40", "0", "1e3", "12,5", "100.12345",
                               "99999999999999.9999", ""]),
    "amount_open": st.sampled_from(["100", "50.25", "0", "-40", "-50", "101", "", "0.0001"]),
}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries(_CELLS), min_size=1, max_size=25),
       short=st.booleans())
def test_the_fast_path_accepts_and_rejects_exactly_what_the_full_check_does(
        tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]],
        short: bool) -> None:
    """Good rows are checked without building a dict; any row the full check would reject must
    still reach it, and a good row must be staged with the same values."""
    folder = tmp_path_factory.mktemp("fast")
    (folder / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    columns = list(_CELLS)
    lines = [",".join(columns)]
    for row in rows:
        cells = [f'"{row[c]}"' if "," in row[c] else row[c] for c in columns]
        lines.append(",".join(cells[:-1] if short and row["amount_open"] == "" else cells))
    (folder / "invoices.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "policy.yaml").write_text(yaml.safe_dump(base_policy(folder)), encoding="utf-8")
    policy = load_policy(folder / "policy.yaml")
    url = f"sqlite:///{folder / 'fast.db'}"
    from dunning.db import upgrade

    upgrade(url)
    memory = pull(policy, folder / "policy.yaml")
    staged = stage(policy, folder / "policy.yaml", get_engine(url))
    assert [r.as_dict() for r in staged.rejects] == [r.as_dict() for r in memory.rejects]
    t = staging.staged_table(staged.table)
    with get_engine(url).connect() as connection:
        got = sorted(tuple(r) for r in connection.execute(
            select(t.c.external_id, t.c.customer_external_id, t.c.number, t.c.issue_date,
                   t.c.due_date, t.c.currency, t.c.amount, t.c.amount_open)
            .where(t.c.valid)))
    want = sorted((i.external_id, i.customer_external_id, i.number, i.issue_date, i.due_date,
                   i.currency, i.amount, i.amount_open) for i in memory.invoices)
    assert got == want


@pytest.mark.parametrize(("manifest", "problem"), [
    ("rows=10\namount_open=1328.75\n", None),
    ("# written by the ERP at 05:58\n\nrows = 10\n", None),
    ("amount_open=1328.7500", None),
    ("rows=11\namount_open=1328.75\n",
     "the export does not match its control figures ({manifest}): it has 10 invoice rows where "
     "the manifest says 11; the export is incomplete"),
    ("rows=10\namount_open=1329\n",
     "it has a total amount_open of 1328.75 where the manifest says 1329;"),
    (None, "invoices.manifest: control manifest not found (source.control.manifest)"),
    ("rows=ten\n", "{manifest}: line 1: rows: 'ten' is not a whole number"),
    ("rows=10\ncount=10\n", "{manifest}: line 2: expected rows=N or amount_open=X, not "
                            "'count=10'"),
    ("rows=10\nrows=10\n", "{manifest}: line 2: rows is given twice"),
    ("# nothing\n", "gives neither rows= nor amount_open="),
], ids=["match", "comments and spaces", "amount only", "rows differ", "amount differs",
        "no manifest", "not a number", "unknown key", "twice", "empty"])
def test_control_figures_refuse_an_export_that_is_not_the_one_described(
        files: Path, db_url: str, manifest: str | None, problem: str | None) -> None:
    """Rows: every invoice line, rejected ones included (the duplicate, the bad date, the one
    without id); total: the sum of every amount_open that reads, as Decimal."""
    path = files.parent / "invoices.manifest"
    if manifest is not None:
        path.write_text(manifest, encoding="utf-8")
    data = yaml.safe_load(files.read_text(encoding="utf-8"))
    data["source"]["control"] = {"manifest": "invoices.manifest"}
    files.write_text(yaml.safe_dump(data), encoding="utf-8")
    policy = load_policy(files)
    engine = get_engine(db_url)
    readers = [lambda: pull(policy, files), lambda: stage(policy, files, engine),
               lambda: stage(policy, files, engine, Shard(1, 2))]
    for read in readers:
        if problem is None:
            staged = read()
            if isinstance(staged, staging.Staged):
                staging.drop(engine, staged.table)
            continue
        with pytest.raises(SnapshotError) as error:
            read()
        assert problem.format(manifest=path) in str(error.value)
        assert str(error.value).endswith("Nothing was changed.")
    assert _staged_tables(db_url) == []
