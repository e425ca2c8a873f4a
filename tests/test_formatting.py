"""Amounts are written exactly as Babel writes them, through a faster path."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.channels.formatting import locale_for, money

LANGUAGES = ("fr", "en", "nl", "de")
COUNTRIES = ("FR", "BE", "LU", "CH", "DE", "AT", "NL", "GB", "IE", "US", "DK", "ES", "PL", None)
CURRENCIES = ("EUR", "GBP", "CHF", "USD", "DKK", "PLN", "SEK", "JPY", "BHD")


@settings(max_examples=400, deadline=None)
@given(language=st.sampled_from(LANGUAGES), country=st.sampled_from(COUNTRIES),
       currency=st.sampled_from(CURRENCIES),
       amount=st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=4,
                          allow_nan=False, allow_infinity=False))
def test_money_is_written_as_babel_writes_it(language: str, country: str | None,
                                             currency: str, amount: Decimal) -> None:
    locale = locale_for(language, country)
    assert money(amount, currency, locale) == format_currency(amount, currency, locale=locale)


def test_french_amounts_keep_their_narrow_spaces() -> None:
    assert money(Decimal("1569.96"), "EUR", locale_for("fr", "FR")) == "1\u202f569,96\xa0€"
    assert money(Decimal("-1569.955"), "EUR", locale_for("de", "DE")) == "-1.569,96\xa0€"
