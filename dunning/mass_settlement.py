"""The mass-settlement guard: does what a snapshot would settle look like a day of payments?

An export cut short (a full disk, a timeout, a header-only file, an empty API answer) looks,
to reconcile, exactly like payments: every invoice it misses is settled and never dunned again.
Payments arrive customer by customer: one customer paying its 300 invoices settles one
customer, while a cut export settles invoices of a large share of the customers at once. So the
guard counts the customers whose invoices settle and compares them with the ledger's own recent
days, and with the open book. Pure: figures in, an objection (or None) out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from dunning.policy import Policy


@dataclass(frozen=True, slots=True)
class Settled:
    """What one run settles (or settled): invoices, distinct customers, open amount, and the
    business days since the run before it, whose payments it gathers (a Monday's run after a
    Friday's: 1; a run after a week without one: 5)."""

    invoices: int
    customers: int
    amount: Decimal
    days: int = 1
    confirmed: bool = False  # the guard objected and --accept-mass-settlement confirmed it

    @property
    def rate(self) -> float:
        """Customers per business day."""
        return self.customers / max(self.days, 1)


@dataclass(frozen=True, slots=True)
class Book:
    """The open invoices (of the shard) before the run: invoices, customers, open amount."""

    invoices: int
    customers: int
    amount: Decimal


def _amount(value: Decimal) -> str:
    return f"{value:,.2f}"


def _share(part: Decimal | int, whole: Decimal | int) -> float:
    return float(part) / float(whole) if whole else 0.0


def usual_customers(history: list[Settled], book: Book,
                    policy: Policy) -> tuple[float, str, Settled | None]:
    """A normal business day's number of customers with settled invoices, where it comes from,
    and the day it is (if it is one): the busiest recent day, per business day it gathered."""
    # Days confirmed with --accept-mass-settlement are not normal ones, except while the ledger
    # is young (fewer than young_runs days of payments: a quiet month says nothing about a day
    # of payments). Then a normal day is at least young_share of the customers, or the busiest
    # confirmed day, so that a ledger whose ordinary days exceed the default is confirmed once,
    # not every morning.
    rule = policy.settlement_guard
    normal = [day for day in history if not day.confirmed]
    busiest = max(normal, key=lambda day: day.rate, default=None)
    rate = 0.0 if busiest is None else busiest.rate
    source = f"the busiest of the last {_days(len(normal))}"
    paying = sum(1 for day in normal if day.customers)
    if paying >= rule.young_runs:
        return rate, source, busiest
    young = f"the ledger being young: {'1 day' if paying == 1 else f'{paying} days'} with payments"
    confirmed = max((day for day in history if day.confirmed), key=lambda day: day.rate,
                    default=None)
    share = math.ceil(rule.young_share * book.customers)
    if confirmed is not None and confirmed.rate > max(rate, share):
        return (confirmed.rate, f"the busiest day confirmed as real payments, "
                f"{young}", confirmed)
    if share > rate:
        return share, (f"{rule.young_share:.0%} of the {book.customers} customers with open "
                       f"invoices, {young} on record"), None
    return rate, source, busiest


def _days(n: int) -> str:
    return "1 day with a run" if n == 1 else f"{n} days with a run"


def objection(today: Settled, book: Book, history: list[Settled], export_empty: bool,
              policy: Policy) -> str | None:
    """Why today's settlements do not look like a day of payments (the message of the
    refusal, without what to do), or None when they do. `history`: the recent days' figures,
    newest first (`settlement_history` in dunning/ledger/reconcile.py)."""
    if not today.invoices:
        return None
    if export_empty:
        return (f"the snapshot holds no invoice at all, and would settle every one of the "
                f"{book.invoices} open invoices ({_amount(today.amount)} open)")
    rule = policy.settlement_guard
    figures = (f"the snapshot would settle {today.invoices} of the {book.invoices} open "
               f"invoices ({_amount(today.amount)} of {_amount(book.amount)} open), of "
               f"{today.customers} of the {book.customers} customers")
    if today.customers <= rule.min_customers:
        return None
    usual, source, example = usual_customers(history, book, policy)
    # factor normal days, and one normal day more for each further business day gathered (a
    # run after a week without one sees a week of payments, but not factor weeks of them).
    days = max(today.days, 1)
    allowed = max(rule.min_customers, math.floor(usual * (rule.factor + days - 1)))
    if today.customers > allowed:
        seen = "" if example is None or not example.customers else (
            f"; that day settled {example.invoices} invoices, {_amount(example.amount)} open")
        gathered = "" if days == 1 else (
            f"; this snapshot gathers the {days} business days since the last run")
        return (f"{figures}; a normal day here settles invoices of {round(usual, 1):g} "
                f"customers ({source}{seen}){gathered}, and settlement_guard accepts up to "
                f"{allowed} (factor {rule.factor:g}, at least min_customers "
                f"{rule.min_customers})")
    share = policy.max_settled_share
    if share < 1 and (today.invoices > share * book.invoices
                      or (book.amount > 0 and _share(today.amount, book.amount) > share)):
        return (f"{figures}: more than max_settled_share ({share:.0%}) of the open invoices "
                "or of the open amount")
    return None
