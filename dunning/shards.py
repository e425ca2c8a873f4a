"""Shards: a daily run split by customer, so that N machines share the work.

A customer belongs to shard K of N when crc32(customer id) mod N = K - 1. The hash is that of
the accounting system's customer id (never Python's salted `hash()`), so every process, every
machine and every day agrees, and a snapshot's rows are split before the customers exist in the
database. The database keeps crc32 in `customer.shard_key` so that queries can filter in SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from dunning.errors import ConfigError
from dunning.models import Customer, shard_key
from dunning.sources.snapshot import Snapshot

_SHAPE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (1 ≤ index ≤ count)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str, label: str = "shard") -> Shard:
        match = _SHAPE.fullmatch(text)
        if match is None:
            raise ConfigError(f"{label}: {text!r} is not K/N (e.g. 1/4: the first of four "
                              "shards)")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 1 <= index <= count:
            raise ConfigError(f"{label}: {text!r}: K must be between 1 and N (N ≥ 1)")
        return cls(index, count)

    @classmethod
    def of(cls, text: str | None, label: str = "shard") -> Shard | None:
        return None if text is None else cls.parse(text, label)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, customer_external_id: str) -> bool:
        return shard_key(customer_external_id) % self.count == self.index - 1

    def overlaps(self, other: Shard | None) -> bool:
        """Whether two shards can share customers (an unsharded run, None, covers them all).
        Shards of the same N are disjoint; shards of different N may overlap."""
        if other is None:
            return True
        return other.count != self.count or other.index == self.index

    def customers(self) -> Any:
        """A subquery of the ids of this shard's customers."""
        key = col(Customer.shard_key)
        return select(col(Customer.id)).where(key % self.count == self.index - 1)

    def split(self, snapshot: Snapshot) -> Snapshot:
        """This shard's customers and their invoices. The ids seen stay those of the whole
        export (an invoice booked to another shard's customer is not gone), and so do the
        rejected rows (every shard reports the export's faults)."""
        customers = [row for row in snapshot.customers if self.holds(row.external_id)]
        mine = {row.external_id for row in customers}
        return Snapshot(
            customers=customers,
            invoices=[row for row in snapshot.invoices if row.customer_external_id in mine],
            rejects=list(snapshot.rejects),
            seen_invoice_ids=snapshot.seen_invoice_ids,
        )


def in_shard(column: Any, shard: Shard | None) -> list[Any]:
    """Conditions keeping rows whose customer id `column` is in the shard (none: every row)."""
    return [] if shard is None else [column.in_(shard.customers())]
