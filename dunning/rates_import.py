"""`dunning rates import FILE`: extend the reference rate tables (config/rates.yaml, or the copy
named by DUNNING_RATES_FILE) from a central bank's own CSV export, so that a user keeps them
current without typing a rate.

Recognised, from the file's header:

    ECB Data Portal download   "DATE","TIME PERIOD","Main refinancing operations - ... (FM.B.U2
                               .EUR.4F.KR.MRR_FR.LEV)"                          -> ecb_mro
    ECB data API, csvdata      KEY,FREQ,...,TIME_PERIOD,OBS_VALUE,... (KEY ...KR.MRR_FR.LEV)
    Bank of England database   DATE,IUDBEDR (or "Date","... IUDBEDR"); 02 Jan 2019  -> boe_bank_rate
    Bank of England history    "Date Changed","Rate"; 11 May 23 (newest first)
    Bundesbank SDMX-CSV        DATAFLOW;...;TIME_PERIOD;OBS_VALUE;... (BBKBAS2)    -> de_base
    Bundesbank BBK-CSV         "";BBIN1.M.DE.BBK.BBKBAS2.EUR.ME;... then 2026-07;1,52;

A series with a value every day (or month) says how far it is complete: its last observation
(the end of its last month). A series of the dates of change only does not: `--through DATE`
says until when the export was current (the day it was downloaded). The rates already in the
table must agree with the file over the days both cover, else nothing is written.
"""

from __future__ import annotations

import calendar
import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from dunning.errors import ConfigError
from dunning.files import write_atomically
from dunning.resources import resource_dir

MAX_BYTES = 20_000_000  # a daily series since 1999 is under a megabyte
MAX_RATE = Decimal(100)
ECB = re.compile(r"KR\.MRR_FR\.LEV")
BOE = "IUDBEDR"
BUNDESBANK = "BBKBAS2"
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Series:
    """A file's observations of one reference rate: (date it applies from, rate, line)."""

    table: str
    kind: str  # the format, as named in the module's docstring
    points: list[tuple[date, Decimal, int]] = field(default_factory=list)
    periodic: bool = True  # a value every day or month: complete through its last one
    monthly: bool = False

    def complete_through(self) -> date | None:
        if not self.points or not self.periodic:
            return None
        last = max(day for day, _, _ in self.points)
        if self.monthly:
            return date(last.year, last.month, calendar.monthrange(last.year, last.month)[1])
        return last


def _rate(text: str, where: str, comma: bool = False) -> Decimal | None:
    """A rate in percent; None for a missing value ("", ".")."""
    value = text.strip().strip('"').strip()
    if value in ("", ".", "NaN", "-"):
        return None
    if comma:
        value = value.replace(".", "").replace(",", ".") if "," in value else value
    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise ConfigError(f"{where}: {text.strip()[:40]!r} is not a rate") from None
    if not rate.is_finite() or not -MAX_RATE < rate < MAX_RATE:
        raise ConfigError(f"{where}: {rate} is not a plausible rate in percent")
    return rate


def _english_date(text: str, where: str) -> date:
    value = text.strip().strip('"').strip()
    for form in ("%d %b %Y", "%d %b %y", "%d-%b-%y", "%d-%b-%Y", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(value, form).date()
        except ValueError:
            continue
        return parsed  # two-digit years: 69-99 are 19xx ("20 Jan 75"), 00-68 20xx
    raise ConfigError(f"{where}: {value[:40]!r} is not a date like 02 Jan 2019")


def _iso_date(text: str, where: str) -> date:
    value = text.strip().strip('"').strip()
    try:
        if _MONTH.match(value):
            return date.fromisoformat(value + "-01")
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{where}: {value[:40]!r} is not a date (YYYY-MM-DD)") from None


def read_series(path: Path) -> Series:
    """The observations of the file at `path`, whatever recognised format it has."""
    try:
        raw = path.read_bytes()[:MAX_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 1_000_000} MB: not a rate export")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.splitlines()
    if not lines:
        raise ConfigError(f"{path}: empty")
    head = lines[0]
    delimiter = ";" if head.count(";") > head.count(",") else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    header = [cell.strip() for cell in rows[0]]
    for reader in (_ecb_portal, _sdmx, _boe_database, _boe_history, _bundesbank_bbk):
        series = reader(path, header, rows)
        if series is not None:
            if not series.points:
                raise ConfigError(f"{path}: this {series.kind} file has not a single rate")
            return series
    raise ConfigError(
        f"{path}: not a rate export this command knows (its first line: {head[:120]!r}); "
        "expected the ECB's main refinancing rate (FM.B.U2.EUR.4F.KR.MRR_FR.LEV), the Bank of "
        "England's Bank Rate (IUDBEDR) or the Bundesbank's base rate (BBK01.SU0115, "
        "BBIN1.M.DE.BBK.BBKBAS2.EUR.ME), as CSV")


def _column(header: list[str], pattern: re.Pattern[str] | str) -> int | None:
    for index, name in enumerate(header):
        if (pattern.search(name) if isinstance(pattern, re.Pattern) else pattern in name):
            return index
    return None


def _ecb_portal(path: Path, header: list[str], rows: list[list[str]]) -> Series | None:
    value = _column(header, ECB)
    if not header or header[0].upper() != "DATE" or value is None:
        return None
    series = Series("ecb_mro", "ECB Data Portal", periodic=".D." in header[value])
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{path}:{number}: {header[value][:40]}"
        rate = _rate(row[value] if value < len(row) else "", where)
        if rate is not None:
            series.points.append((_iso_date(row[0], f"{path}:{number}: DATE"), rate, number))
    return series


def _sdmx(path: Path, header: list[str], rows: list[list[str]]) -> Series | None:
    """SDMX-CSV (the ECB's data API `csvdata`, the Bundesbank's): one row an observation, its
    series named in the row (the ECB's KEY, the Bundesbank's dimensions)."""
    names = {name: index for index, name in enumerate(header)}
    if not {"TIME_PERIOD", "OBS_VALUE"} <= names.keys():
        return None
    series: Series | None = None
    for number, row in enumerate(rows[1:], start=2):
        if len(row) <= max(names["TIME_PERIOD"], names["OBS_VALUE"]):
            continue
        if ECB.search(",".join(row)):
            frequency = row[names["FREQ"]] if "FREQ" in names else ""
            series = series or Series("ecb_mro", "ECB data API", periodic=frequency == "D")
        elif BUNDESBANK in ";".join(row):
            series = series or Series("de_base", "Bundesbank SDMX-CSV", monthly=True)
        else:
            continue
        rate = _rate(row[names["OBS_VALUE"]], f"{path}:{number}: OBS_VALUE")
        if rate is not None:
            series.points.append((_iso_date(row[names["TIME_PERIOD"]],
                                            f"{path}:{number}: TIME_PERIOD"), rate, number))
    return series


def _boe_database(path: Path, header: list[str], rows: list[list[str]]) -> Series | None:
    value = _column(header, BOE)
    if not header or header[0].upper() != "DATE" or value is None:
        return None
    series = Series("boe_bank_rate", "Bank of England database")
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        rate = _rate(row[value] if value < len(row) else "", f"{path}:{number}: {BOE}")
        if rate is not None:
            series.points.append((_english_date(row[0], f"{path}:{number}: DATE"), rate,
                                  number))
    return series


def _boe_history(path: Path, header: list[str], rows: list[list[str]]) -> Series | None:
    if [name.lower() for name in header[:2]] != ["date changed", "rate"]:
        return None
    series = Series("boe_bank_rate", "Bank of England history", periodic=False)
    for number, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or not "".join(row).strip():
            continue
        rate = _rate(row[1], f"{path}:{number}: Rate")
        if rate is not None:
            series.points.append((_english_date(row[0], f"{path}:{number}: Date Changed"),
                                  rate, number))
    return series


def _bundesbank_bbk(path: Path, header: list[str], rows: list[list[str]]) -> Series | None:
    if len(header) < 2 or BUNDESBANK not in header[1]:
        return None
    series = Series("de_base", "Bundesbank BBK-CSV", monthly=".M." in header[1])
    for number, row in enumerate(rows[1:], start=2):
        first = row[0].strip() if row else ""
        if len(row) < 2 or not (_MONTH.match(first) or _DAY.match(first)):
            continue  # the metadata lines (unit, decimals, dates of the export, comments)
        rate = _rate(row[1], f"{path}:{number}: {header[1][:40]}", comma=True)
        if rate is not None:
            series.points.append((_iso_date(first, f"{path}:{number}: date"), rate, number))
    return series


@dataclass
class Extension:
    """What an import adds to a table."""

    table: str
    kind: str
    added: list[tuple[date, Decimal]]
    known_through_before: date
    known_through: date

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "format": self.kind,
                "added": [{"from": day.isoformat(), "rate": str(rate)}
                          for day, rate in self.added],
                "known_through_before": self.known_through_before.isoformat(),
                "known_through": self.known_through.isoformat()}


def _in_force(changes: list[tuple[date, Decimal]], day: date) -> Decimal | None:
    rate = None
    for since, value in changes:
        if since <= day:
            rate = value
    return rate


def extend(series: Series, table: dict[str, Any], path: Path,
           through: date | None) -> Extension:
    """The table's changes and completeness once `series` is added (checked against it)."""
    known = table["known_through"]
    changes = sorted((day, Decimal(str(rate))) for day, rate in table["changes"].items())
    points = sorted(series.points)
    complete = series.complete_through()
    if complete is None:
        if through is None:
            raise ConfigError(f"{path}: this {series.kind} file lists the dates the rate changed, "
                              "not how far it is complete: give --through DATE, the day the "
                              "export was current (the day you downloaded it). Nothing was "
                              "written.")
        complete = through
    elif through is not None:
        complete = min(complete, through)
    last = points[-1][0]
    if complete < last:
        raise ConfigError(f"{path}: --through {complete} is before the file's last rate "
                          f"({last}). Nothing was written.")
    # Over the days both know, the file and the table must say the same.
    for day, rate, line in points:
        if day <= known:
            ours = _in_force(changes, day)
            if ours is not None and ours != rate:
                raise ConfigError(f"{path}:{line}: {series.table} on {day}: the file says "
                                  f"{rate}, the table {ours} (known through {known}); check "
                                  "the file and the table. Nothing was written.")
    for day, rate in changes:
        theirs = _in_force([(d, r) for d, r, _ in points], day)
        if points[0][0] <= day <= min(known, complete) and theirs is not None and theirs != rate:
            raise ConfigError(f"{path}: {series.table} on {day}: the table says {rate}, the "
                              f"file {theirs}. Nothing was written.")
    added: list[tuple[date, Decimal]] = []
    merged = list(changes)
    for day, rate, _ in points:
        if day <= known:
            continue
        if _in_force(merged, day - timedelta(days=1)) != rate:
            merged.append((day, rate))
            added.append((day, rate))
    return Extension(series.table, series.kind, added, known, max(known, complete))


def import_rates(source: Path, target: Path, through: date | None = None,
                 dry_run: bool = False) -> Extension:
    """Read the export `source` and extend the matching table of `target` (a copy of the
    shipped tables is made there first when it does not exist). Comments and the other tables
    are kept as they are."""
    series = read_series(source)
    fresh = not target.exists()
    text = (resource_dir("config") / "rates.yaml" if fresh else target).read_text(
        encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if series.table not in data:
        raise ConfigError(f"{target}: no table {series.table}. Nothing was written.")
    extension = extend(series, data[series.table], source, through)
    changed = extension.added or extension.known_through != extension.known_through_before
    if not dry_run and (changed or fresh):
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, _rewrite(text, series.table, extension).encode("utf-8"))
    return extension


def _written(rate: Decimal) -> str:
    """A rate as the tables write it: two decimals at least ("4.00", "3.125")."""
    exact = rate.normalize()
    exponent = exact.as_tuple().exponent
    return str(exact.quantize(Decimal("0.01"))) if isinstance(exponent, int) and \
        exponent >= -2 else str(exact)


def _rewrite(text: str, table: str, extension: Extension) -> str:
    """The YAML text with the table's new changes and completeness, nothing else touched."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == f"{table}:"), None)
    assert start is not None
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].strip() and not lines[i].startswith((" ", "#"))), len(lines))
    block = lines[start:end]
    for i, line in enumerate(block):
        if line.lstrip().startswith("known_through:"):
            indent = line[:len(line) - len(line.lstrip())]
            block[i] = f"{indent}known_through: {extension.known_through.isoformat()}\n"
    last = max(i for i, line in enumerate(block)
               if re.match(r"^\s+\d{4}-\d{2}-\d{2}:", line))
    spaces = re.match(r"^(\s+)", block[last])
    pad = spaces.group(1) if spaces else "    "
    new = [f'{pad}{day.isoformat()}: "{_written(rate)}"\n' for day, rate in extension.added]
    if not block[last].endswith("\n"):
        block[last] += "\n"
    block[last + 1:last + 1] = new
    return "".join(lines[:start] + block + lines[end:])
