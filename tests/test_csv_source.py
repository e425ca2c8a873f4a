"""The CSV snapshot: good rows in, bad rows out with file, line and field."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from dunning.errors import SnapshotError
from dunning.sources.csv import read_csv_snapshot

CUSTOMERS = """customer_id,name,email,phone,language,country,credit_limit,segment
C1,"Dupont, Fils & Cie",compta@dupont.example,,fr,FR,5000,small
C2,Bad Language BV,ap@bad.example,,xx,NL,,
C3,Multi Mail GmbH,"a@multi.example; b@multi.example",,DE,de,,
C4,No Language SARL,,,,,,
"""


def _files(tmp_path: Path, invoices: str, customers: str = CUSTOMERS) -> tuple[Path, Path]:
    c, i = tmp_path / "customers.csv", tmp_path / "invoices.csv"
    c.write_text(customers, encoding="utf-8")
    i.write_text(invoices, encoding="utf-8")
    return c, i


HEADER = "invoice_id,customer_id,number,issue_date,due_date,currency,amount,amount_open\n"


def test_good_rows_are_read_exactly(tmp_path: Path) -> None:
    c, i = _files(tmp_path, HEADER +
                  "I1,C1,F-1,2026-10-01,2026-10-31,,1234.56,1000.10\n"
                  "I2,C3,F-2,,2026-11-30,chf,99.9,99.9\n"
                  "CN1,C1,AV-1,,2026-11-30,EUR,-300,-300\n")
    snap = read_csv_snapshot(c, i, default_language="fr", default_currency="EUR")
    assert [r.external_id for r in snap.invoices] == ["I1", "I2", "CN1"]
    first = snap.invoices[0]
    assert first.amount == Decimal("1234.56") and first.amount_open == Decimal("1000.10")
    assert first.currency == "EUR" and first.due_date == date(2026, 10, 31)
    assert snap.invoices[1].currency == "CHF"
    customers = {c.external_id: c for c in snap.customers}
    assert customers["C1"].name == "Dupont, Fils & Cie"
    assert customers["C3"].email == "a@multi.example; b@multi.example"
    assert customers["C3"].language == "de" and customers["C3"].country == "DE"
    assert customers["C4"].language == "fr" and customers["C4"].email is None


@pytest.mark.parametrize(("row", "field", "message"), [
    ("I9,C1,F,,,EUR,10,10", "due_date", "required value is missing"),
    ("I9,C1,F,,2026-13-01,EUR,10,10", "due_date", "'2026-13-01' is not a date"),
    ("I9,C1,F,,2026-11-01,EUR,\"12,50\",10", "amount", "'12,50' is not an amount"),
    ("I9,C1,F,,2026-11-01,EUR,10,", "amount_open", "required value is missing"),
    ("I9,C1,F,,2026-11-01,EUR,10,11", "amount_open", "is not between 0 and the amount 10"),
    ("I9,C1,F,,2026-11-01,EUR,-10,-11", "amount_open", "credit note"),
    ("I9,C1,F,,2026-11-01,EURO,10,10", "currency", "not an ISO 4217 code"),
    ("I9,C404,F,,2026-11-01,EUR,10,10", "customer_id", "unknown customer 'C404'"),
    ("I9,C2,F,,2026-11-01,EUR,10,10", "customer_id", "customer 'C2' was rejected"),
    ("I9,C1,F,2026-11-02,2026-11-01,EUR,10,10", "due_date", "before the issue date"),
    (",C1,F,,2026-11-01,EUR,10,10", "invoice_id", "required value is missing"),
    ("I9,C1,F,,2026-11-01,EUR,NaN,10", "amount", "is not an amount"),
    ("I9,C1,F,,2026-11-01,EUR,1e20,10", "amount", "'1e20' is not an amount"),
    ("I9,C1,F,,2026-11-01,EUR,1_000,10", "amount", "'1_000' is not an amount"),
    ("I9,C1,F,,2026-11-01,EUR,١٠٠,10", "amount", "is not an amount"),
    ("I9,C1,F,,2026-11-01,EUR,10.12345,10", "amount", "has more than 4 decimals"),
    ("I9,C1,F,,20261101,EUR,10,10", "due_date", "'20261101' is not a date"),
], ids=["no due date", "bad date", "decimal comma", "no open amount", "open above amount",
        "credit note out of range", "bad currency", "unknown customer", "rejected customer",
        "due before issue", "no id", "NaN", "exponent", "underscore", "arabic digits",
        "five decimals", "basic date format"])
def test_a_bad_row_is_rejected_with_file_line_and_field(tmp_path: Path, row: str, field: str,
                                                        message: str) -> None:
    c, i = _files(tmp_path, HEADER + "I1,C1,F-1,,2026-10-31,EUR,100,100\n" + row + "\n"
                  "I3,C1,F-3,,2026-10-31,EUR,100,100\n")
    snap = read_csv_snapshot(c, i)
    assert [r.external_id for r in snap.invoices] == ["I1", "I3"]
    invoice_rejects = [r for r in snap.rejects if r.file == "invoices.csv"]
    assert len(invoice_rejects) == 1
    reject = invoice_rejects[0]
    assert (reject.line, reject.field) == (3, field)
    assert message in reject.message
    assert str(reject).startswith(f"invoices.csv:3: {field}: ")


def test_rejected_customers_and_duplicates(tmp_path: Path) -> None:
    customers = CUSTOMERS + "C1,Again,,,,,,\n"
    c, i = _files(tmp_path, HEADER + "I1,C1,F,,2026-10-31,EUR,1,1\nI1,C1,F,,2026-10-31,EUR,2,2\n",
                  customers)
    snap = read_csv_snapshot(c, i)
    messages = [str(r) for r in snap.rejects]
    assert "customers.csv:3: language: 'xx' is not one of fr, en, nl, de" in messages
    assert "customers.csv:6: customer_id: duplicate 'C1', first on line 2" in messages
    assert "invoices.csv:3: invoice_id: duplicate 'I1', first on line 2" in messages
    assert [r.amount for r in snap.invoices] == [Decimal(1)]


def test_line_numbers_count_physical_lines_of_quoted_fields(tmp_path: Path) -> None:
    customers = ("customer_id,name\n"
                 "C1,\"Two\nlines\"\n"
                 "C2,Fine\n")
    c, i = _files(tmp_path, HEADER + "I1,C1,F,,bad,EUR,1,1\n", customers)
    snap = read_csv_snapshot(c, i)
    assert [x.name for x in snap.customers] == ["Two\nlines", "Fine"]
    assert str(snap.rejects[0]).startswith("invoices.csv:2: due_date:")


def test_rows_that_fail_still_count_as_seen(tmp_path: Path) -> None:
    """A typo in the export must not look like a payment."""
    c, i = _files(tmp_path, HEADER + "I1,C1,F,,not-a-date,EUR,1,1\n")
    snap = read_csv_snapshot(c, i)
    assert snap.invoices == [] and snap.seen_invoice_ids == {"I1"}


def test_a_bom_and_extra_columns_are_fine(tmp_path: Path) -> None:
    c, i = _files(tmp_path, "\ufeff" + HEADER.strip() + ",notes\nI1,C1,F,,2026-10-31,EUR,5,5,x\n")
    snap = read_csv_snapshot(c, i)
    assert [r.file for r in snap.rejects] == ["customers.csv"]  # C2's language
    assert snap.invoices[0].external_id == "I1"


@pytest.mark.parametrize(("invoices", "message"), [
    (None, "invoices.csv: file not found"),
    ("", "invoices.csv: no header row"),
    ("invoice_id,customer_id,amount\n", "header lacks required column(s) due_date, amount_open"),
], ids=["missing", "empty", "missing columns"])
def test_an_unreadable_file_is_refused_whole(tmp_path: Path, invoices: str | None,
                                            message: str) -> None:
    c, i = _files(tmp_path, invoices or "")
    if invoices is None:
        i.unlink()
    with pytest.raises(SnapshotError, match="nothing was changed") as error:
        read_csv_snapshot(c, i)
    assert message in str(error.value)


LONG = "X" * 101


@pytest.mark.parametrize(("customer", "field"), [
    (f"{LONG},Long Id SA,,,,,,", "customer_id"),
    ("C9," + "N" * 201 + ",,,,,,", "name"),
    ("C9,Many Mail,\"" + "; ".join(f"ap{n:03d}@example.example" for n in range(50)) + "\",,,,,",
     "email"),
    ("C9,Long Phone," + ",+33 " + "1" * 60 + ",,,,", "phone"),
    ("C9,Long Segment,,,,,," + "s" * 101, "segment"),
], ids=["101-char id", "201-char name", "1,000-char email cell", "long phone", "long segment"])
def test_a_customer_field_longer_than_its_limit_is_rejected(tmp_path: Path, customer: str,
                                                           field: str) -> None:
    c, i = _files(tmp_path, HEADER + "I1,C1,F-1,,2026-10-31,EUR,100,100\n",
                  CUSTOMERS + customer + "\n")
    snap = read_csv_snapshot(c, i)
    (reject,) = [r for r in snap.rejects if r.line == 6]
    assert (reject.file, reject.field) == ("customers.csv", field)
    assert "characters, more than the" in reject.message and len(reject.message) < 120
    assert [x.external_id for x in snap.customers] == ["C1", "C3", "C4"]


@pytest.mark.parametrize(("row", "field", "message"), [
    (f"{LONG},C1,F,,2026-11-01,EUR,10,10", "invoice_id", "101 characters, more than the 100"),
    (f"I9,{LONG},F,,2026-11-01,EUR,10,10", "customer_id", "101 characters, more than the 100"),
    ("I9,C1," + "9" * 10_000 + ",,2026-11-01,EUR,10,10", "number",
     "10000 characters, more than the 100"),
    ("I9,C1,F,," + "2" * 10_000 + ",EUR,10,10", "due_date", "… (10000 characters) is not a date"),
], ids=["101-char id", "101-char customer", "10,000-char number", "10,000-char date"])
def test_an_invoice_field_longer_than_its_limit_is_rejected(tmp_path: Path, row: str, field: str,
                                                           message: str) -> None:
    c, i = _files(tmp_path, HEADER + "I1,C1,F-1,,2026-10-31,EUR,100,100\n" + row + "\n")
    snap = read_csv_snapshot(c, i)
    (reject,) = [r for r in snap.rejects if r.file == "invoices.csv"]
    assert (reject.line, reject.field) == (3, field)
    assert message in reject.message and len(reject.message) < 120
    assert [x.external_id for x in snap.invoices] == ["I1"]


@pytest.mark.parametrize(("email", "stored", "message"), [
    ("ap@exämple.example", "ap@xn--exmple-cua.example", None),
    ("AP@Straße.example; b@b.example", "AP@xn--strae-oqa.example; b@b.example", None),
    ("ü@exämple.example", None, "the part before @ is not ASCII, which needs SMTPUTF8"),
    ("ap@ex_ämple.example", None, "not a valid internationalised domain name"),
    ("a<b@x.example", None, "is not an email address"),
    ("a..b@x.example", None, "is not an email address"),
    ("a" * 64 + "@" + "d" * 190 + ".example", None, "more than the 254 an address may have"),
], ids=["IDN domain", "IDN among two", "non-ASCII local part", "bad IDN", "angle bracket",
        "double dot", "too long"])
def test_an_email_address_is_stored_as_it_can_be_sent(tmp_path: Path, email: str,
                                                      stored: str | None,
                                                      message: str | None) -> None:
    c, i = _files(tmp_path, HEADER, f'customer_id,name,email\nC1,Someone,"{email}"\n')
    snap = read_csv_snapshot(c, i)
    if stored is not None:
        assert snap.rejects == [] and snap.customers[0].email == stored
    else:
        (reject,) = snap.rejects
        assert (reject.line, reject.field) == (2, "email") and message in reject.message


@pytest.mark.parametrize(("which", "header", "names"), [
    ("invoices.csv", HEADER.strip() + ",amount_open", "8 ('amount_open') and 9 ('amount_open')"),
    ("invoices.csv", HEADER.strip() + ", Amount_Open ",
     "8 ('amount_open') and 9 (' Amount_Open ')"),
    ("invoices.csv", "Invoice_ID," + HEADER.strip(), "1 ('Invoice_ID') and 2 ('invoice_id')"),
    ("customers.csv", "customer_id,name,NAME", "2 ('name') and 3 ('NAME')"),
], ids=["amount_open twice", "same after normalising", "invoice_id twice", "customers' name"])
def test_a_column_given_twice_is_refused(tmp_path: Path, which: str, header: str,
                                         names: str) -> None:
    """Today the last copy wins: a second amount_open of zeros settled the whole ledger."""
    if which == "invoices.csv":
        c, i = _files(tmp_path, header + "\nI1,C1,F,,2026-10-31,EUR,5,5,0\n")
    else:
        c, i = _files(tmp_path, HEADER + "I1,C1,F,,2026-10-31,EUR,5,5\n",
                      customers=header + "\nC1,One,Uno\n")
    with pytest.raises(SnapshotError) as error:
        read_csv_snapshot(c, i)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / which}: line 1: columns {names} are both read as ")
    assert message.endswith("Nothing was changed.")


def _cp1252_on_line(tmp_path: Path, line: int) -> tuple[Path, Path]:
    rows = [f"I{n},C1,F-{n},,2026-10-31,EUR,5,5" for n in range(2, line)]
    rows.append("I99,C1,Société générale,,2026-10-31,EUR,5,5")
    rows += [f"J{n},C1,F-{n},,2026-10-31,EUR,5,5" for n in range(500)]
    c, i = _files(tmp_path, "")
    i.write_bytes((HEADER + "\n".join(rows) + "\n").encode("cp1252"))
    return c, i


@pytest.mark.parametrize("line", [3, 57, 400], ids=["in the first block", "line 57",
                                                    "past the first block"])
def test_a_file_that_is_not_utf8_names_the_line_of_the_bad_byte(tmp_path: Path,
                                                                 line: int) -> None:
    """Today: 'line 1: unreadable header' or 'near byte N' of some block, never the line."""
    c, i = _cp1252_on_line(tmp_path, line)
    with pytest.raises(SnapshotError) as error:
        read_csv_snapshot(c, i)
    assert str(error.value) == (f"{i}: line {line}: not valid UTF-8 (byte 0xe9); export the "
                                "file as UTF-8. Nothing was changed.")


def test_the_utf8_scan_carries_characters_across_blocks(tmp_path: Path) -> None:
    from dunning.sources.csv import find_bad_utf8

    path = tmp_path / "x.csv"
    path.write_bytes("a,é€😀\nb,€\n".encode() + b"c,\xff\n")
    for block_size in range(1, 20):
        assert find_bad_utf8(path, block_size) == (3, 0xff), block_size
    path.write_bytes("a,é€😀\nb,€\n".encode())
    assert find_bad_utf8(path, 3) is None
    path.write_bytes("a,é".encode()[:-1])  # cut in the middle of the last character
    assert find_bad_utf8(path, 2) == (1, 0xc3)
