"""Statutory late-payment interest and fixed recovery compensation, per creditor country, from
dated rules and rate tables (config/rates.yaml). Pure: amounts in, amounts out, no clock.

    FR  Code de commerce L441-10 (ECB rate + 10 points, the rate of each half-year applying to
        the days in it) and D441-5 (EUR 40 per invoice)
    BE  Loi du 2 août 2002, art. 5 (ECB rate + 8 points, rounded up to the next half point;
        EUR 40) - also the EU default of Directive 2011/7/EU (without the rounding)
    DE  § 288 (2) and (5) BGB (Basiszinssatz + 9 points; EUR 40)
    GB  Late Payment of Commercial Debts (Interest) Act 1998 (Bank Rate + 8 points, fixed on
        the reference date before the debt fell due: 31 December or 30 June; GBP 40/70/100)

Interest runs day by day from the day after the due date to the business date included, on the
open amount, actual/365. Nothing is rounded here but `Claim.rounded()`, half-up to the cent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path

import yaml

from dunning.errors import ConfigError
from dunning.resources import resource_dir

CENT = Decimal("0.01")
DAYS_A_YEAR = Decimal(365)


@dataclass(frozen=True)
class RateTable:
    """A reference rate's changes, and how far the table is known to be complete."""

    key: str
    name: str
    source: str
    known_through: date
    changes: tuple[tuple[date, Decimal], ...]

    def on(self, day: date) -> Decimal:
        """The rate in force on `day`; refused past `known_through` rather than guessed."""
        if day > self.known_through:
            raise ConfigError(
                f"{rates_file()}: {self.key}: the {self.name} on {day} is not known (the "
                f"table is complete through {self.known_through}); download the rates from "
                f"{self.source.split(':')[0]} as CSV and run `dunning rates import FILE`, or "
                "set law.rate in the policy"
            )
        rate = None
        for since, value in self.changes:
            if since <= day:
                rate = value
        if rate is None:
            raise ConfigError(f"{rates_file()}: {self.key}: no rate before {day}")
        return rate


def rates_file() -> Path:
    """The rate tables in use: DUNNING_RATES_FILE when set (a copy kept current with `dunning
    rates import`), else the shipped config/rates.yaml."""
    override = os.environ.get("DUNNING_RATES_FILE")
    return Path(override) if override else resource_dir("config") / "rates.yaml"


def load_rates(path: Path | None = None) -> dict[str, RateTable]:
    path = path or rates_file()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"{path}: the rate tables cannot be read ({exc.strerror})") from None
    return _load_rates(path, stamp)


@lru_cache(maxsize=4)
def _load_rates(path: Path, stamp: int) -> dict[str, RateTable]:
    """The tables of `path` as of its modification time `stamp` (an import changes it)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    tables = {}
    for key, spec in data.items():
        try:
            changes = tuple(sorted((day, Decimal(str(rate))) for day, rate in
                                   spec["changes"].items()))
            tables[key] = RateTable(key, spec["name"], spec["source"], spec["known_through"],
                                    changes)
        except (KeyError, TypeError, ArithmeticError) as exc:
            raise ConfigError(f"{path}: {key}: {exc!r}") from None
    return tables


@dataclass(frozen=True)
class Rule:
    country: str
    law: str
    reference: str  # a key of the rate tables
    margin: Decimal  # percentage points over the reference rate
    fixed_at_due: bool  # one rate for the whole debt (GB) or each half-year's own (FR, DE, BE)
    round_up_half_point: bool = False
    currency: str = "EUR"

    def compensation(self, principal: Decimal) -> Decimal:
        """The fixed sum for recovery costs, per invoice."""
        if self.country == "GB":
            return Decimal(40) if principal < 1000 else Decimal(70) if principal < 10000 \
                else Decimal(100)
        return Decimal(40)


RULES = {
    "FR": Rule("FR", "Code de commerce L441-10, D441-5", "ecb_mro", Decimal(10), False),
    "BE": Rule("BE", "Loi du 2 août 2002, art. 5, 6", "ecb_mro", Decimal(8), False,
               round_up_half_point=True),
    "DE": Rule("DE", "§ 288 (2), (5) BGB", "de_base", Decimal(9), False),
    "GB": Rule("GB", "Late Payment of Commercial Debts (Interest) Act 1998, s. 4, 5A",
               "boe_bank_rate", Decimal(8), True, currency="GBP"),
    "EU": Rule("EU", "Directive 2011/7/EU, art. 2(6), 6", "ecb_mro", Decimal(8), False),
}


# Where Directive 2011/7/EU applies (transposed by every member state): its default rule is
# sound where no national rule is coded above. Elsewhere we know no statute to cite.
EU_MEMBERS = frozenset({"AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR",
                        "HR", "HU", "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO",
                        "SE", "SI", "SK"})


def statutory_rule(country: str) -> Rule | None:
    """The rule a creditor of `country` may cite as law: its country's own, the directive's in
    another member state; None where no rule is known (a statement would be a guess)."""
    country = country.upper()
    if country in RULES:
        return RULES[country]
    return RULES["EU"] if country in EU_MEMBERS else None


def rule_for(country: str) -> Rule:
    """The creditor country's rule; the EU directive's default for any other country."""
    return RULES.get(country.upper(), RULES["EU"])


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # included
    rate: Decimal  # annual, in percent

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True)
class Claim:
    """What one invoice's debtor owes on top of the principal, and how it was computed."""

    principal: Decimal
    interest: Decimal  # unrounded
    compensation: Decimal
    compensation_currency: str
    periods: tuple[Period, ...]
    law: str

    def rounded(self) -> Claim:
        return Claim(self.principal, self.interest.quantize(CENT, ROUND_HALF_UP),
                     self.compensation, self.compensation_currency, self.periods, self.law)


def _half_year_start(day: date) -> date:
    return date(day.year, 1 if day.month <= 6 else 7, 1)


def _statutory_rate(rule: Rule, fixing_day: date, tables: dict[str, RateTable]) -> Decimal:
    rate = tables[rule.reference].on(fixing_day) + rule.margin
    if rule.round_up_half_point:
        rate = (rate * 2).to_integral_value(ROUND_CEILING) / 2
    return rate


def claim(principal: Decimal, due: date, as_of: date, rule: Rule, *,
          tables: dict[str, RateTable] | None = None, rate: Decimal | None = None,
          compensation: Decimal | None = None) -> Claim:
    """Interest and compensation on `principal`, overdue since `due`, counted to `as_of`.
    `rate` (annual percent) replaces the statutory rate when the contract or policy sets one."""
    tables = tables or load_rates()
    fixed = compensation if compensation is not None else rule.compensation(principal)
    if as_of <= due or principal <= 0:
        return Claim(principal, Decimal(0), fixed if as_of > due else Decimal(0),
                     rule.currency, (), rule.law)
    start = due + timedelta(days=1)
    periods: list[Period] = []
    if rate is not None or rule.fixed_at_due:
        if rate is None:
            # GB: the reference date is the 31 December or 30 June before the debt fell due.
            reference_day = _half_year_start(start) - timedelta(days=1)
            rate = _statutory_rate(rule, reference_day, tables)
        periods.append(Period(start, as_of, rate))
    else:
        cursor = start
        while cursor <= as_of:
            half = _half_year_start(cursor)
            next_half = date(half.year, 7, 1) if half.month == 1 else date(half.year + 1, 1, 1)
            end = min(as_of, next_half - timedelta(days=1))
            periods.append(Period(cursor, end, _statutory_rate(rule, half, tables)))
            cursor = end + timedelta(days=1)
    interest = sum((principal * p.rate / 100 * p.days / DAYS_A_YEAR for p in periods),
                   Decimal(0))
    return Claim(principal, interest, fixed, rule.currency, tuple(periods), rule.law)
