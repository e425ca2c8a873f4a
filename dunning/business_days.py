"""Business days: Monday to Friday, less the public holidays of the creditor's country."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import holidays


def business_days(start: date, country: str) -> Iterator[date]:
    """`start` (if a business day) and the business days after it, forever."""
    closed = holidays.country_holidays(country, years=range(start.year, start.year + 3))
    day = start
    while True:
        if day.weekday() < 5 and day not in closed:
            yield day
        day += timedelta(days=1)


def business_days_between(after: date, until: date, country: str) -> int:
    """How many business days d there are with `after` < d ≤ `until`."""
    if until <= after:
        return 0
    closed = holidays.country_holidays(country, years=range(after.year, until.year + 1))
    days = (after + timedelta(days=n) for n in range(1, (until - after).days + 1))
    return sum(1 for day in days if day.weekday() < 5 and day not in closed)
