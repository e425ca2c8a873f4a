"""Statutory interest and compensation: worked examples computed by hand (shown in comments)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from dunning.errors import ConfigError
from dunning.law import claim, load_rates, rule_for

D = Decimal


def test_france_one_half_year() -> None:
    # 10,000.00 due 2025-03-31, counted to 2025-04-30: 30 days at 3.15 + 10 = 13.15 %
    # 10000 x 13.15 / 100 x 30 / 365 = 108.0821917... -> 108.08
    result = claim(D("10000.00"), date(2025, 3, 31), date(2025, 4, 30), rule_for("FR"))
    assert [(p.start, p.end, p.rate) for p in result.periods] == [
        (date(2025, 4, 1), date(2025, 4, 30), D("13.15"))]
    assert result.rounded().interest == D("108.08")
    assert (result.compensation, result.compensation_currency) == (D(40), "EUR")
    assert "L441-10" in result.law


def test_france_across_two_half_years_uses_each_rate() -> None:
    # 1,000.00 due 2025-06-20: 06-21..06-30 = 10 days at 13.15 %, 07-01..07-10 = 10 days at
    # 2.15 + 10 = 12.15 %: 1000 x (13.15 x 10 + 12.15 x 10) / 100 / 365 = 6.9315... -> 6.93
    result = claim(D("1000"), date(2025, 6, 20), date(2025, 7, 10), rule_for("fr"))
    assert [(p.days, p.rate) for p in result.periods] == [(10, D("13.15")), (10, D("12.15"))]
    assert result.rounded().interest == D("6.93")


def test_belgium_rounds_up_to_the_half_point() -> None:
    # 2025-H1: 3.15 + 8 = 11.15 -> 11.5 %. 2,000.00 due 2025-01-31, to 2025-03-02 = 30 days:
    # 2000 x 11.5 / 100 x 30 / 365 = 18.9041... -> 18.90
    result = claim(D("2000"), date(2025, 1, 31), date(2025, 3, 2), rule_for("BE"))
    assert result.periods[0].rate == D("11.5")
    assert result.rounded().interest == D("18.90")


def test_germany_base_rate_plus_nine() -> None:
    # 2025-H2 Basiszinssatz 1.27 + 9 = 10.27 %. 5,000.00 due 2025-08-31, to 2025-09-30 = 30 days:
    # 5000 x 10.27 / 100 x 30 / 365 = 42.2054... -> 42.21
    result = claim(D("5000"), date(2025, 8, 31), date(2025, 9, 30), rule_for("DE"))
    assert result.periods[0].rate == D("10.27")
    assert result.rounded().interest == D("42.21")
    assert result.compensation == D(40)


def test_united_kingdom_fixed_rate_and_tiered_compensation() -> None:
    # Due 2025-02-28: reference date 2024-12-31, Bank Rate 4.75 % -> 12.75 % for the whole debt.
    # 12,000.00 to 2025-08-27: 2025-03-01..08-27 = 180 days, across the half-year, one rate:
    # 12000 x 12.75 / 100 x 180 / 365 = 754.5205... -> 754.52; compensation GBP 100 (>= 10,000)
    result = claim(D("12000"), date(2025, 2, 28), date(2025, 8, 27), rule_for("GB"))
    assert [(p.days, p.rate) for p in result.periods] == [(180, D("12.75"))]
    assert result.rounded().interest == D("754.52")
    assert (result.compensation, result.compensation_currency) == (D(100), "GBP")
    assert rule_for("GB").compensation(D("999.99")) == D(40)
    assert rule_for("GB").compensation(D("1000")) == D(70)


def test_other_countries_follow_the_directive() -> None:
    # NL: ECB + 8, no rounding: 2025-H1 11.15 %. 365.00 over 10 days: 365 x 11.15/100 x 10/365
    # = 1.115 -> 1.12 (half-up)
    result = claim(D("365"), date(2025, 1, 10), date(2025, 1, 20), rule_for("NL"))
    assert result.periods[0].rate == D("11.15")
    assert result.interest == D("1.115") and result.rounded().interest == D("1.12")


def test_nothing_runs_until_the_day_after_the_due_date() -> None:
    assert claim(D("500"), date(2025, 5, 1), date(2025, 5, 1), rule_for("FR")).interest == 0
    one_day = claim(D("36500"), date(2025, 5, 1), date(2025, 5, 2), rule_for("FR"))
    assert one_day.interest == D("13.15")  # 36500 x 13.15 % / 365


def test_a_rate_not_yet_in_the_table_is_refused_not_guessed() -> None:
    tables = load_rates()
    assert tables["ecb_mro"].known_through == date(2026, 1, 31)
    with pytest.raises(ConfigError, match="the ECB main refinancing operations rate on "
                                          "2026-07-01 is not known"):
        claim(D("1000"), date(2026, 6, 15), date(2026, 7, 15), rule_for("FR"))
    # A rate set by the contract or the policy applies to every day.
    agreed = claim(D("1000"), date(2026, 6, 15), date(2026, 7, 15), rule_for("FR"),
                   rate=D("12.15"), compensation=D(0))
    assert agreed.rounded().interest == D("9.99")  # 1000 x 12.15 % x 30 / 365 = 9.986...
    assert agreed.compensation == 0
