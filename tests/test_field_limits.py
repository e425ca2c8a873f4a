"""Hostile values from the accounting system are refused at the door, the same way on SQLite and
PostgreSQL: a value over its field's limit rejects its row (file, line, field; exit 3) and the
rest of the run goes on; values at the limits go all the way to the files dunning writes."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from dunning.db import get_engine, transaction
from tests.conftest import Portfolio, query
from tests.helpers import cli, day, outbox, run

pytestmark = pytest.mark.usefixtures("prefect_server")

# At the limits, with characters a file name must not carry as they are.
MAX_CUSTOMER = ("../Zürich/" + "C" * 100)[:100]
MAX_INVOICE = "I" * 100


def test_values_over_their_limits_reject_their_rows_and_the_rest_goes_on(
        portfolio: Portfolio, db_url: str) -> None:
    portfolio.customer("C1")
    portfolio.invoice("GOOD", "C1", due=day(-5))
    portfolio.customer(MAX_CUSTOMER, name="N" * 200, email=f"{'a' * 60}@{'d' * 60}.example")
    portfolio.customers[MAX_CUSTOMER]["address"] = "A" * 500
    portfolio.invoice(MAX_INVOICE, MAX_CUSTOMER, due=day(-5))
    portfolio.invoices[MAX_INVOICE]["number"] = "N" * 100
    portfolio.customer("L" * 101)                                               # line 4
    portfolio.invoice("OF-LONG", "L" * 101, due=day(-5))                         # line 4
    portfolio.invoice("J" * 101, "C1", due=day(-5))                              # line 5
    portfolio.invoice("HUGE", "C1", due=day(-5))                                 # line 6
    portfolio.invoices["HUGE"]["number"] = "9" * 10_000
    portfolio.customer("NAME", name="N" * 201)                                   # line 5
    portfolio.customer("MAIL", email="; ".join(f"ap{n:03d}@mail.example" for n in range(60)))
    portfolio.customer("POST")                                                   # line 7
    portfolio.customers["POST"]["address"] = "A" * 501
    portfolio.invoice("OF-NAME", "NAME", due=day(-5))                            # line 7
    portfolio.write()

    report = run(day(0), expect=3)
    rejected = [(r["file"], r["line"], r["field"]) for r in report["rejected_rows"]]
    assert rejected == [("customers.csv", 4, "customer_id"), ("customers.csv", 5, "name"),
                        ("customers.csv", 6, "email"), ("customers.csv", 7, "address"),
                        ("invoices.csv", 4, "customer_id"), ("invoices.csv", 5, "invoice_id"),
                        ("invoices.csv", 6, "number"), ("invoices.csv", 7, "customer_id")]
    assert all(len(r["message"]) < 150 for r in report["rejected_rows"])
    assert report["snapshot"]["invoices"] == 2
    assert sorted(row[0] for row in query(db_url, "SELECT external_id FROM invoice")) == \
        ["GOOD", MAX_INVOICE]
    assert report["dispatch"]["sent"] == 2, "both customers at or under the limits are dunned"
    files = sorted((portfolio.folder / "outbox").glob("*.eml"))
    assert len(files) == 2 and all(len(f.name.encode()) < 255 for f in files)

    result = cli("run", "--as-of", day(1).isoformat())
    assert result.exit_code == 3
    assert "rejected invoices.csv:6: number: 10000 characters, more than the 100 allowed" \
        in result.stderr


def test_file_names_from_outside_values_stay_short_and_distinct() -> None:
    """Ids stored before the limits existed (SQLite kept a 10,000-character one) still make
    file names the file system accepts, and two long ids never share one."""
    from dunning.files import safe_name

    first, second = safe_name("C" * 10_000), safe_name("C" * 9_999 + "D")
    assert len(first) == len(second) == 100 and first != second
    assert first.startswith("C" * 80)
    assert safe_name("../Zürich/C1") == ".._Z_rich_C1", "short names are unchanged"


def test_an_internationalised_domain_reaches_the_outbox_in_ascii(portfolio: Portfolio) -> None:
    """An address the outbox (plain RFC 5322, ASCII headers) could not write as it is is refused
    when the export is read, never a UnicodeEncodeError at delivery."""
    portfolio.customer("C1", email="ap@exämple.example; b@b.example")
    portfolio.invoice("I1", "C1", due=day(-4))
    portfolio.customer("C2", email="ü@exämple.example")
    portfolio.invoice("I2", "C2", due=day(-4))
    portfolio.write()
    report = run(day(0), expect=3)
    assert [(r["file"], r["line"], r["field"]) for r in report["rejected_rows"]] == [
        ("customers.csv", 3, "email"), ("invoices.csv", 3, "customer_id")]
    assert (report["dispatch"]["sent"], report["dispatch"]["failed"]) == (1, 0)
    (message,) = outbox(portfolio)
    assert message["To"] == "ap@xn--exmple-cua.example, b@b.example"


def test_an_address_stored_before_the_rule_fails_its_action_with_a_sentence(
        portfolio: Portfolio, db_url: str) -> None:
    """A database from an older version may hold an address the transports cannot send as it
    is; while the export's row is rejected the customer keeps it: the action fails, saying so,
    instead of an internal UnicodeEncodeError."""
    portfolio.customer("C1")
    portfolio.invoice("I1", "C1", due=day(30))
    portfolio.write()
    run(day(0))
    with transaction(get_engine(db_url)) as session:
        session.execute(text("UPDATE customer SET email = 'ü@exämple.example' "
                             "WHERE external_id = 'C1'"))
    portfolio.customers["C1"]["language"] = "xx"  # the row is rejected: the customer is kept
    portfolio.write()
    report = run(day(26), expect=3)
    assert (report["dispatch"]["sent"], report["dispatch"]["failed"]) == (0, 1)
    (failure,) = report["dispatch"]["errors"]
    assert failure["error"].startswith("customer C1: an email address is not ASCII")
