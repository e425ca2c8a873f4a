"""Control figures: the row count and total open amount an accounting system writes beside its
export, so that an export cut short (a full disk, a copy interrupted on a line boundary) is
refused instead of settling every invoice it lost.

The manifest is a small text file of `key=value` lines (blank lines and `#` comments ignored):

    rows=245
    amount_open=183412.50

`rows`: the invoice lines of invoices.csv (the header and blank lines excepted, rejected rows
included); `amount_open`: the sum of their amount_open (plain digits, `.` as decimal point).
Either may be left out; at least one is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from dunning.errors import SnapshotError

_ROWS = re.compile(r"^\d{1,15}$", re.ASCII)
_AMOUNT = re.compile(r"^-?\d{1,18}(\.\d{1,4})?$", re.ASCII)


@dataclass(frozen=True, slots=True)
class ControlFigures:
    rows: int | None
    amount_open: Decimal | None


def read_manifest(path: Path) -> ControlFigures:
    """Read a manifest; every fault names the file and the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SnapshotError(f"{path}: control manifest not found (source.control.manifest); "
                            "the export may not be complete yet. Nothing was changed.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{path}: cannot read the control manifest: {exc}. "
                            "Nothing was changed.") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = (part.strip() for part in line.partition("="))
        where = f"{path}: line {number}"
        if not equals or key not in ("rows", "amount_open"):
            raise SnapshotError(f"{where}: expected rows=N or amount_open=X, not {raw.strip()!r}."
                                " Nothing was changed.")
        if key in values:
            raise SnapshotError(f"{where}: {key} is given twice. Nothing was changed.")
        if not (_ROWS if key == "rows" else _AMOUNT).match(value):
            kind = "a whole number" if key == "rows" else "an amount (digits, '.' as decimal point)"
            raise SnapshotError(f"{where}: {key}: {value!r} is not {kind}. Nothing was changed.")
        values[key] = value
    if not values:
        raise SnapshotError(f"{path}: the control manifest gives neither rows= nor amount_open=. "
                            "Nothing was changed.")
    rows = values.get("rows")
    amount = values.get("amount_open")
    return ControlFigures(None if rows is None else int(rows),
                          None if amount is None else Decimal(amount))


def _shown(amount: Decimal) -> str:
    """An amount as the export would write it: cents, or every decimal it has."""
    cents = amount.quantize(Decimal("0.01"))
    return str(cents if cents == amount else amount.normalize())


def check(manifest: Path, invoices: Path, rows: int, amount_open: Decimal) -> None:
    """Refuse an export whose figures are not its manifest's."""
    figures = read_manifest(manifest)
    wrong = []
    if figures.rows is not None and figures.rows != rows:
        wrong.append(f"{rows} invoice rows where the manifest says {figures.rows}")
    if figures.amount_open is not None and figures.amount_open != amount_open:
        wrong.append(f"a total amount_open of {_shown(amount_open)} where the manifest says "
                     f"{figures.amount_open}")
    if wrong:
        raise SnapshotError(
            f"{invoices}: the export does not match its control figures ({manifest}): it has "
            f"{' and '.join(wrong)}; the export is incomplete or not the one the manifest "
            "describes. Export both again. Nothing was changed.")
