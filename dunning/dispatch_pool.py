"""Delivering one message and what became of it; and the process pool that delivers a first
run's thousands of emails and letters on every core.

A message's cost is its rendering (templates, the amounts in the customer's language, the SEPA
QR code, a letter's PDF), all CPU: threads would wait on each other. The dispatcher (the
parent) claims the actions and records the outcomes, the only writes; each worker reads the
claimed actions' messages, renders and writes them (the outbox folder, the letters folder) and
answers what it did. Only transports a worker can rebuild from what it is given go there (the
outbox); a provider reached over the network stays in the dispatcher.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from multiprocessing.util import Finalize
from pathlib import Path

from sqlalchemy import Engine

from dunning.channels.message import Message
from dunning.channels.protocol import Channel, Claimed, Delivered
from dunning.db import get_reader
from dunning.errors import DeliveryError
from dunning.messages import read_messages
from dunning.policy import Policy

# Below this many messages the pool's start (a fresh interpreter a worker, about half a
# second) costs more than it saves.
POOL_MIN = 1000
MAX_WORKERS = 32
NICENESS = 10
STAGING_PREFIX = ".writing-"
PARENT_CHECK = 0.2  # seconds between a worker's looks at its parent


@dataclass(frozen=True)
class Attempt:
    """What delivering one action did: delivered, or the error (a DeliveryError's message and
    whether a later day may retry; `internal` for a bug, with its traceback)."""

    action_id: int
    customer_ref: str
    delivered: Delivered | None = None
    error: str | None = None
    retryable: bool = True
    internal: str | None = None  # the traceback of an unexpected exception
    cancelled: bool = False  # no invoice left to mention (paid, disputed... since decided)
    unknown: bool = False  # the provider may have it: never sent again by guess
    retry_after: float | None = None  # rate limited: try again after this many seconds
    released: bool = False  # never attempted (the channel stopped): queued again


def attempt(channel: Channel, action_id: int, action: Claimed, message: Message) -> Attempt:
    """Deliver one message; every exception becomes the Attempt's error (a bug must not stop
    the other customers' messages)."""
    try:
        return Attempt(action_id, message.customer_ref,
                       delivered=channel.deliver(action_id, action, message))
    except DeliveryError as exc:
        return Attempt(action_id, message.customer_ref, error=str(exc), retryable=exc.retryable,
                       unknown=exc.unknown, retry_after=exc.retry_after)
    except Exception as exc:
        return Attempt(action_id, message.customer_ref, error=f"internal error: {exc!r}",
                       internal=traceback.format_exc())


def deliver_claimed(channel: Channel, engine: Engine, ids: list[int], as_of: date,
                    policy: Policy) -> list[Attempt]:
    """Read a claimed chunk's messages and deliver them one by one (an action left with no
    invoice to mention is cancelled), in the order of the actions."""
    return [attempt(channel, action_id, action, message) if message is not None
            else Attempt(action_id, action.dedupe_key, cancelled=True)
            for action_id, (action, message) in sorted(
                read_messages(engine, ids, as_of, policy).items())]


def workers_for(setting: int | None, messages: int) -> int:
    """How many worker processes deliver `messages` messages: the setting when given (0: none,
    every message in the dispatcher), else one a core when there are enough of them."""
    if setting is not None:
        return max(0, min(setting, MAX_WORKERS))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cores or 1, MAX_WORKERS) if messages >= POOL_MIN and (cores or 1) > 1 else 0


@dataclass
class _Worker:
    channel: Channel
    engine: Engine
    as_of: date
    policy: Policy


_worker: _Worker | None = None  # a worker's own channel and database, built once by `_start`


def _start(kind: str, folder: Path, policy: Policy, letters_dir: Path | None, url: str,
           as_of: date) -> None:
    global _worker
    # Below the dispatcher's priority: evaluating the next batch and recording outcomes come
    # first, the workers take the cores' time left over.
    os.nice(NICENESS)
    # A worker holds both ends of the pool's queue, so the death of its dispatcher (`kill -9`)
    # would leave it waiting forever: it watches its parent and stops with it.
    threading.Thread(target=_orphaned, args=(os.getppid(),), daemon=True,
                     name="dunning-parent-watch").start()
    from dunning.channels.email import MessageChannel
    from dunning.channels.outbox import Outbox

    # Each worker writes its messages in a hidden folder of its own inside the outbox, then
    # renames them into it (dunning.files.write_atomically); the folder goes with the worker.
    staging = folder / f"{STAGING_PREFIX}{os.getpid()}"
    Finalize(None, _remove_folder, args=(staging,), exitpriority=10)
    _worker = _Worker(MessageChannel(kind, Outbox(folder, policy, staging), policy, letters_dir),
                      get_reader(url), as_of, policy)


def _orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os._exit(1)  # a message half-written stays in the worker's folder, swept by recovery


def _remove_folder(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # never created (no message), or a message left half-written by a crash
        pass


def _deliver(ids: list[int]) -> list[Attempt]:
    """Read the claimed actions' messages (a read of the ledger, beside the dispatcher's
    writes) and deliver them."""
    assert _worker is not None, "a worker delivers only once started"
    return deliver_claimed(_worker.channel, _worker.engine, ids, _worker.as_of, _worker.policy)


class Pool:
    """Worker processes delivering chunks of messages through the outbox, the outcomes given
    back in the order the chunks went in. The chunks out are claimed (`sending`) while they
    wait: a crash of the dispatcher strands them (their files may be written)."""

    def __init__(self, workers: int, kind: str, folder: Path, policy: Policy,
                 letters_dir: Path | None, url: str, as_of: date) -> None:
        # A fresh interpreter per worker ("spawn"), never a fork: the dispatcher runs inside a
        # Prefect flow, whose threads may hold locks at the moment of a fork.
        self.executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start, initargs=(kind, folder, policy, letters_dir, url, as_of))
        self.ahead = workers + 1
        self.pending: deque[Future[list[Attempt]]] = deque()

    def submit(self, ids: Sequence[int]) -> None:
        """Hand a claimed chunk to the workers."""
        self.pending.append(self.executor.submit(_deliver, list(ids)))

    def done(self) -> Iterator[list[Attempt]]:
        """The outcomes of the oldest chunks already delivered (never waits)."""
        while self.pending and self.pending[0].done():
            yield self.pending.popleft().result()

    def beyond(self) -> Iterator[list[Attempt]]:
        """The outcomes of the oldest chunks, waited for while more than `ahead` are out."""
        while len(self.pending) > self.ahead:
            yield self.pending.popleft().result()
        yield from self.done()

    def drain(self) -> Iterator[list[Attempt]]:
        while self.pending:
            yield self.pending.popleft().result()

    def close(self) -> None:
        # Chunks not started are cancelled: their actions stay `sending`, reported in flight.
        self.executor.shutdown(wait=True, cancel_futures=True)
