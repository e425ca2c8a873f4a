"""Amounts and dates as a reader of each language expects them (Babel)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency

_DEFAULT_REGION = {"fr": "fr_FR", "en": "en_GB", "nl": "nl_NL", "de": "de_DE"}


@lru_cache(maxsize=64)
def locale_for(language: str, country: str | None) -> Locale:
    """`nl` in BE is nl_BE; a pair Babel does not know falls back to the language's default."""
    if country:
        try:
            return Locale.parse(f"{language}_{country}")
        except (UnknownLocaleError, ValueError):
            pass
    return Locale.parse(_DEFAULT_REGION.get(language, language))


def money(amount: Decimal, currency: str, locale: Locale) -> str:
    return format_currency(amount, currency, locale=locale)


@lru_cache(maxsize=8192)  # a run formats the same few due dates thousands of times
def day(value: date, locale: Locale, style: str = "medium") -> str:
    return format_date(value, format=style, locale=locale)


def totals(amounts: dict[str, Decimal], locale: Locale) -> str:
    """One total per currency, joined with ' + ' (a customer may owe in two currencies)."""
    return " + ".join(money(total, cur, locale) for cur, total in sorted(amounts.items()))
