"""Amounts and dates as a reader of each language expects them (Babel)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, get_currency_precision
from markupsafe import escape

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
    """An amount as Babel's `format_currency` writes it, 20 times faster: Babel re-reads the
    locale's pattern for every call, and a first run formats a dozen amounts per message."""
    shape = _shape(currency, locale)
    if shape is None:
        return format_currency(amount, currency, locale=locale)
    return _apply(shape, amount)


_Shape = tuple[int, str, str, tuple[str, str], tuple[str, str]]
_PROBES = (Decimal("0"), Decimal("0.5"), Decimal("7.05"), Decimal("999.99"), Decimal("1000"),
           Decimal("-1000"), Decimal("12345.675"), Decimal("-12345.685"), Decimal("1234567.5"),
           Decimal("-0.01"), Decimal("100000000"))


@lru_cache(maxsize=512)
def _shape(currency: str, locale: Locale) -> _Shape | None:
    """How this locale writes this currency: decimals, separators, and what comes before and
    after the number, positive and negative. None when Babel's output cannot be reproduced
    (then Babel formats every amount itself)."""
    digits = get_currency_precision(currency)
    sides: list[tuple[str, str]] = []
    group = decimal = ""
    for sample in (Decimal("1234567.891"), Decimal("-1234567.891")):
        text = format_currency(sample, currency, locale=locale)
        first = next(i for i, c in enumerate(text) if c.isdigit())
        last = max(i for i, c in enumerate(text) if c.isdigit())
        sides.append((text[:first], text[last + 1:]))
        number = text[first:last + 1]
        group = number[1]
        decimal = number[-(digits + 1)] if digits else ""
    shape: _Shape = (digits, group, decimal, sides[0], sides[1])
    for probe in _PROBES:
        if _apply(shape, probe) != format_currency(probe, currency, locale=locale):
            return None
    return shape


def _apply(shape: _Shape, amount: Decimal) -> str:
    digits, group, decimal, positive, negative = shape
    rounded = amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN)
    before, after = negative if amount < 0 else positive
    text = f"{abs(rounded):,.{digits}f}"
    return before + text.replace(",", "\x00").replace(".", decimal).replace("\x00", group) + after


_FIRST = re.compile(r"(?<!\d)1(?=\s)")


@lru_cache(maxsize=8192)  # a run formats the same few due dates thousands of times
def day(value: date, locale: Locale, style: str = "medium") -> str:
    """A date as the locale writes it; in French the first of a month is an ordinal, "1er
    octobre 2026" (Babel, as CLDR, writes "1 octobre")."""
    text = format_date(value, format=style, locale=locale)
    if value.day == 1 and locale.language == "fr":
        text = _FIRST.sub("1er", text, count=1)
    return text


# French elides "de", "que", "le" and "la" before a vowel or a mute h: "au nom d'Atelier
# Exemple SAS", "Tribunal de commerce d'Angers". A name's h cannot be told mute from aspirated
# ("de Honda", "d'Hôtel Dieu"): only the beginnings of common words with a mute h elide.
_ELIDED = {"de": "d'", "que": "qu'", "le": "l'", "la": "l'"}
_VOWELS = frozenset("aeiouàâäéèêëîïôöùûüæœ")
_MUTE_H = ("hab", "hél", "hér", "hés", "heu", "hist", "hiv", "hom", "hôp", "hor", "hôt",
           "hui", "hum", "hydr", "hyg", "hyp")
_CONSONANT_Y = frozenset("aeiouéè")  # "de Yoplait" (y before a vowel), but "d'Yvetot"


def elides(following: str) -> bool:
    """Whether a French "de", "que", "le" or "la" elides before `following`."""
    word = following.lstrip("«\"' \u00a0").lower()
    if not word:
        return False
    if word[0] == "y":
        return len(word) > 1 and word[1] not in _CONSONANT_Y and word[1].isalpha()
    return word[0] in _VOWELS or word.startswith(_MUTE_H)


def elide(word: str, following: str) -> str:
    """`word` and `following` as French writes them: "de" + "Angers" is "d'Angers"."""
    elided = _ELIDED.get(word.lower())
    if elided is None or not elides(following):
        return f"{word} {following}"
    return (elided.capitalize() if word[0].isupper() else elided) + following


def elide_before(text: str, names: Iterable[str]) -> str:
    """French `text` with "de", "que", "le" and "la" elided before each of `names` (a name
    put after them by a message: "au nom de %(name)s"), as written or HTML-escaped.

    Each name is looked for with `str.find` and only the words just before it are read: a
    regular expression tried at every position of a letter cost a fifth of an email."""
    found = {n for name in names if name and elides(name) for n in (name, str(escape(name)))}
    if not found:
        return text
    cuts: dict[int, tuple[int, str]] = {}  # where the elided word begins -> (name's start, text)
    for name in found:
        at = text.find(name)
        while at >= 0:
            cut = _elision(text, at)
            if cut is not None:
                cuts[cut[0]] = (at, cut[1])
            at = text.find(name, at + 1)
    if not cuts:
        return text
    out: list[str] = []
    done = 0
    for start in sorted(cuts):
        end, replacement = cuts[start]
        if start < done:  # two names at one place ("A" and "A &amp; B"): once
            continue
        out += (text[done:start], replacement)
        done = end
    out.append(text[done:])
    return "".join(out)


_WORDS = ("de", "que", "le", "la", "De", "Que", "Le", "La")


def _elision(text: str, at: int) -> tuple[int, str] | None:
    """Where the word before position `at` begins (with the space before it) and what replaces
    it up to `at`, when it is one that elides: " de Atelier" -> " d'Atelier"; a text email's
    line broken between the word and the name now breaks before the word."""
    between = text[at - 1:at]
    if between not in (" ", "\n"):
        return None
    for word in _WORDS:
        start = at - 1 - len(word)
        if start < 0 or text[start:at - 1] != word:
            continue
        if start and (text[start - 1].isalnum() or text[start - 1] == "_"):
            return None  # the end of a longer word ("Bastide Atelier")
        elided = _ELIDED[word.lower()]
        elided = elided.capitalize() if word[0].isupper() else elided
        space = start > 0 and text[start - 1] == " "
        if between == "\n":
            return start - space, "\n" + elided
        return start - space, (" " if space else "") + elided
    return None


def totals(amounts: dict[str, Decimal], locale: Locale) -> str:
    """One total per currency, joined with ' + ' (a customer may owe in two currencies)."""
    return " + ".join(money(total, cur, locale) for cur, total in sorted(amounts.items()))
