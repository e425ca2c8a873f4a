"""What a channel is to dispatch: it is handed a claimed action and its message, delivers it,
and says what it did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from sqlalchemy.orm import Session

from dunning.channels.message import Message


class Claimed(NamedTuple):
    """What delivering a claimed action needs of its row (channels read `customer_id` and
    `dedupe_key`)."""

    id: int
    customer_id: int
    dedupe_key: str
    kind: str
    stage: str


@dataclass
class Delivered:
    """What a channel did with an action: the provider's id for it, the file it produced, and
    rows to write in the same transaction that marks the action sent."""

    provider_id: str | None = None
    document: str | None = None
    after: Callable[[Session], None] | None = None


class Channel(Protocol):
    kind: str

    def deliver(self, action_id: int, action: Claimed, message: Message) -> Delivered: ...
