"""A batch that is deciding holds its invoices: a pause recorded meanwhile waits for it."""

from __future__ import annotations

import sqlite3
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from dunning import ledger, pauses
from dunning.db import get_engine, transaction
from dunning.sources.snapshot import CustomerRow, InvoiceRow, Snapshot

AS_OF = date(2026, 11, 2)


def _ledger(db_url: str) -> None:
    snapshot = Snapshot(
        customers=[CustomerRow("C1", "Dupont", "ap@dupont.example", None, "fr", "FR", None,
                               None)],
        invoices=[InvoiceRow("I1", "C1", "F-1", None, date(2026, 10, 1), "EUR",
                             Decimal("100"), Decimal("100"))],
        seen_invoice_ids={"I1"},
    )
    with transaction(get_engine(db_url)) as session:
        ledger.reconcile(session, snapshot, AS_OF, None)


def test_a_pause_waits_for_the_batch_that_is_deciding(db_url: str) -> None:
    _ledger(db_url)
    engine = get_engine(db_url)
    with transaction(engine) as batch:
        facts = ledger.facts_for(batch, 0, 10**9)
        assert [f.state for f in facts] == ["active"]
        if engine.dialect.name == "sqlite":
            other = sqlite3.connect(engine.url.database, timeout=0.2, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
        else:
            with engine.connect() as connection, connection.begin():
                connection.execute(text("SET LOCAL lock_timeout = '300ms'"))
                with pytest.raises(OperationalError, match="lock timeout"):
                    connection.execute(text(
                        "UPDATE invoice SET state = 'paused' WHERE external_id = 'I1'"))
    with transaction(engine) as session:
        invoice = pauses.dispute(session, "I1", by="Claire", reason="late", on=AS_OF)
    assert invoice.state == "paused"
