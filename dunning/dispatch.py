"""Dispatch: deliver queued and approved actions from the outbox table, claiming each one before
calling out so that no action is ever delivered twice."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.channels.email import POST_ONLY, MessageChannel
from dunning.channels.outbox import Outbox
from dunning.channels.protocol import Channel
from dunning.channels.sendgrid import SendGrid
from dunning.coltypes import utcnow
from dunning.concurrent_send import send
from dunning.db import transaction
from dunning.dispatch_pool import POOL_MIN, Attempt, Pool, deliver_claimed, workers_for
from dunning.ledger import chunks
from dunning.messages import read_messages
from dunning.models import Action
from dunning.pacing import Breaker, Gate
from dunning.policy import Policy
from dunning.shards import Shard, in_shard
from dunning.statuses import READY, UNDELIVERED, ActionStatus

log = logging.getLogger("dunning.dispatch")
CLAIM_CHUNK = 100
# A provider reached over the network is claimed ten at a time: a crash during its calls leaves
# at most these `unknown` for a person to settle (an outbox's file tells whether it was written).
PROVIDER_CLAIM_CHUNK = 10
# An action's `last_error` is read in a table by a person: a provider's whole answer or a long
# traceback would drown it (and grow the table with every failed morning).
LAST_ERROR_LENGTH = 500

# The run whose dispatches claim actions (set by the daily flow around its steps): a claim
# names its run, so that the next run knows a claim of a run that died (dunning/recovery.py).
_run: ContextVar[str | None] = ContextVar("dunning_claiming_run", default=None)


@contextmanager
def claims_of(run_id: str) -> Iterator[None]:
    token = _run.set(run_id)
    try:
        yield
    finally:
        _run.reset(token)


def brief(text: str, limit: int = LAST_ERROR_LENGTH) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass
class DispatchResult:
    channel: str
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    would_send: int = 0
    in_flight: int = 0  # claimed by an earlier dispatch that never recorded an outcome
    waiting: Counter[str] = field(default_factory=Counter)  # undelivered, by channel
    errors: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # letters to post, court files written
    post_only: int = 0  # letters to a customer without an email address: posted, not emailed
    workers: int = 0  # processes that rendered and wrote the messages (0: the run's own)
    unknown: int = 0  # the provider may have them (a timeout after the request went out)
    stopped: str | None = None  # why the channel stopped before the end (the rest: queued)

    def as_dict(self) -> dict[str, Any]:
        out = {"channel": self.channel, "sent": self.sent, "failed": self.failed,
               "cancelled": self.cancelled, "would_send": self.would_send,
               "unknown": self.unknown, "in_flight": self.in_flight, "workers": self.workers,
               "stopped": self.stopped, "errors": self.errors}
        if self.channel in ("letter", "injunction"):
            out["files"] = self.files
        if self.channel == "letter":
            out["post_only"] = self.post_only
        return out


def _claimable(policy: Policy, kind: str, as_of: date) -> Any:
    max_attempts = policy.email.max_attempts if policy.email else 5
    return and_(
        col(Action.kind) == kind,
        or_(
            col(Action.status).in_(READY),
            # A failure is retried by a later business day, never by a rerun of the same one.
            and_(col(Action.status) == ActionStatus.FAILED, col(Action.retryable).is_(True),
                 col(Action.attempts) < max_attempts,
                 or_(col(Action.attempted_on).is_(None), col(Action.attempted_on) < as_of)),
        ),
    )


def _claim(engine: Engine, claimable: Any, as_of: date, ids: list[int],
           holder: dict[str, Any] | None = None,
           size: int = CLAIM_CHUNK) -> Iterator[list[int]]:
    """Claim claimable actions (`status` → `sending`), a chunk per transaction, and yield the
    ids claimed, each by exactly one dispatcher however many run at once.

    PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED takes the first chunk of rows no other
    dispatcher holds, and the UPDATE in the same transaction claims them; this loops until no
    unclaimed row is left (rows another dispatcher holds are its own to send). SQLite has no
    SKIP LOCKED and serialises writers (BEGIN IMMEDIATE): the `ids` seen at the start are
    claimed by a conditional UPDATE that skips those no longer claimable."""

    def take(session: Any, chunk: Sequence[int]) -> list[int]:
        # Conditional: a row no longer claimable (another dispatcher's) is left alone.
        return list(session.execute(
            update(Action).where(col(Action.id).in_(chunk), claimable)
            .values(status=ActionStatus.SENDING, attempts=col(Action.attempts) + 1,
                    attempted_on=as_of, updated_at=utcnow(), claimed_at=utcnow(), **(holder or {}))
            .returning(col(Action.id)).execution_options(synchronize_session=False)
        ).scalars())

    if engine.dialect.name == "postgresql":
        while True:
            with transaction(engine) as session:
                locked = list(session.execute(
                    select(col(Action.id)).where(claimable).order_by(col(Action.id))
                    .limit(size)
                    .with_for_update(skip_locked=True, of=Action)).scalars())
                claimed = take(session, locked) if locked else []
            if not claimed:
                return
            yield claimed
    for chunk in chunks(ids, size):
        with transaction(engine) as session:
            claimed = take(session, chunk)
        if claimed:
            yield claimed


def dispatch(
    engine: Engine, policy: Policy, transport: Outbox | SendGrid | Channel | None, as_of: date,
    *, kind: str = "email", letters_dir: Path | None = None, dry_run: bool = False,
    shard: Shard | None = None, workers: int | None = None, run_id: str | None = None,
) -> DispatchResult:
    """Deliver every claimable action of a channel, of the shard's customers when given:
    `email`; `letter` (a PDF kept for registered post, and sent as an attachment to a customer
    with an email address); `agency` or
    `injunction` (given their Channel). With `dry_run` (or no transport) only count.
    `workers`: processes rendering outbox emails and letters (None: one a core for a
    thousand messages or more; 0: none)."""
    if dry_run or transport is None:
        result = DispatchResult(channel=kind)
        claimable = and_(_claimable(policy, kind, as_of), *in_shard(Action.customer_id, shard))
        with transaction(engine) as session:
            result.would_send = session.execute(
                select(func.count()).select_from(Action).where(claimable)).scalar_one()
            result.in_flight = _in_flight(session, kind, shard)
        return result
    return Dispatcher(engine, policy, transport, as_of, kind=kind, letters_dir=letters_dir,
                      shard=shard, workers=workers, run_id=run_id).finish()


def _in_flight(session: Session, kind: str, shard: Shard | None) -> int:
    return int(session.execute(
        select(func.count()).select_from(Action)
        .where(col(Action.kind) == kind, col(Action.status) == ActionStatus.SENDING,
               *in_shard(Action.customer_id, shard))).scalar_one())


class Dispatcher:
    """Delivers a channel's claimable actions: `feed` delivers those claimable now, `finish`
    the rest, and returns the result.

    The daily flow feeds the emails of each batch of customers as soon as the batch is
    evaluated: the worker processes render and write them while the next batch is evaluated,
    on the core evaluation leaves idle. Claiming and recording stay in this process, between
    batches, so that the database never sees two writers of one run."""

    def __init__(self, engine: Engine, policy: Policy, transport: Outbox | SendGrid | Channel,
                 as_of: date, *, kind: str = "email", letters_dir: Path | None = None,
                 shard: Shard | None = None, workers: int | None = None,
                 warm: bool = False, run_id: str | None = None) -> None:
        self.engine, self.policy, self.as_of, self.kind = engine, policy, as_of, kind
        self.letters_dir, self.workers = letters_dir, workers
        # Who holds the claims (the run) and the way the messages go: what recovery reads.
        self.via = str(getattr(transport, "name", kind))[:16]
        self.holder = {"claimed_by": run_id or _run.get(), "claimed_via": self.via}
        self.result = DispatchResult(channel=kind)
        self.claimable = and_(_claimable(policy, kind, as_of),
                              *in_shard(Action.customer_id, shard))
        with transaction(engine) as session:  # claimed by an earlier dispatch, never recorded
            self.result.in_flight = _in_flight(session, kind, shard)
        # An email transport delivers through the messages' channel; anything else is one.
        self.channel: Channel = MessageChannel(kind, transport, policy, letters_dir) \
            if isinstance(transport, (Outbox, SendGrid)) else transport
        # Emails and letters record their outcomes a claimed chunk at a time (one transaction
        # per hundred messages rather than per message). A crash in between leaves that chunk
        # `sending`: never sent again by itself, reported as in flight. Agency cases and court
        # files are recorded one by one, with the rows they add.
        self.outcomes = _Outcomes(engine, 1 if kind in ("agency", "injunction") else CLAIM_CHUNK)
        # Worker processes render the outbox's emails and letters (dunning/dispatch_pool.py):
        # a worker rebuilds the outbox from its folder; a provider stays here.
        self.folder = transport.folder \
            if isinstance(transport, Outbox) and kind in ("email", "letter") else None
        self.pool: Pool | None = None
        # SendGrid's pace, for the whole dispatch: a breaker open after one feed stays open.
        email = policy.email
        self.gate = Gate(email.rate_per_second if email else None)
        self.breaker = Breaker(email.max_consecutive_failures if email else 20)
        if warm:  # many messages to come: the workers start now (a second), not at the first
            self._start(POOL_MIN)

    def _start(self, messages: int) -> None:
        if self.pool is not None or self.folder is None:
            return
        count = workers_for(self.workers, messages)
        if count:
            self.pool = Pool(count, self.kind, self.folder, self.policy, self.letters_dir,
                             self.engine.url.render_as_string(hide_password=False), self.as_of)
            self.result.workers = count

    def feed(self, *, wait: bool = False) -> None:
        """Claim and deliver what is claimable now: here, or handed to the workers (with
        `wait`, at most a few chunks left out when it returns)."""
        with transaction(self.engine) as session:
            ids = list(session.execute(select(col(Action.id)).where(self.claimable)
                                       .order_by(col(Action.id))).scalars())
        if ids:
            self._start(len(ids))
        if self.via == "sendgrid":
            self._send(ids)
            return
        for claimed in _claim(self.engine, self.claimable, self.as_of, ids, self.holder):
            if self.pool is not None:  # the workers read the messages too
                self.pool.submit(claimed)
                for attempts in (self.pool.beyond() if wait else self.pool.done()):
                    self._record(attempts)
                continue
            self._record(deliver_claimed(self.channel, self.engine, claimed, self.as_of,
                                         self.policy))

    def _send(self, ids: list[int]) -> None:
        """SendGrid: concurrent calls at the provider's pace (dunning/concurrent_send.py)."""
        settings = self.policy.email
        assert settings is not None  # SendGrid refuses a policy without `email:`
        breaker = self.breaker
        if breaker.open:  # stopped by an earlier feed of this run: the rest waits, queued
            return
        send(_claim(self.engine, self.claimable, self.as_of, ids, self.holder,
                    PROVIDER_CLAIM_CHUNK),
             lambda claimed: read_messages(self.engine, claimed, self.as_of, self.policy),
             self.channel, self._record,
             settings.concurrency if self.kind == "email" else 1,  # a letter's PDF: one at once
             self.gate, breaker)
        if breaker.open:
            self.result.stopped = (
                f"{breaker.limit} transport failures in a row (the last: "
                f"{brief(breaker.last_error or '', 200)}): the channel stopped for this run; "
                "what is left stays queued for the next run")
            log.warning("%s: %s", self.kind, self.result.stopped)

    def finish(self) -> DispatchResult:
        """Deliver the rest, wait for the workers, and say what happened."""
        try:
            self.feed(wait=True)
            if self.pool is not None:
                for attempts in self.pool.drain():
                    self._record(attempts)
        finally:
            self.close()
        return self.result

    def close(self) -> None:
        """Stop the workers. After an error elsewhere in the run, what they have delivered is
        still recorded (their messages are out); what they could not is left `sending`."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        try:
            for attempts in pool.drain():
                self._record(attempts)
        except Exception:
            log.exception("the outcomes of messages being delivered could not be recorded")
        finally:
            pool.close()

    def _record(self, attempts: list[Attempt]) -> None:
        for done in attempts:
            _record(done, self.outcomes, self.result, self.kind)
        self.outcomes.flush()


def _record(done: Attempt, outcomes: _Outcomes, result: DispatchResult, kind: str) -> None:
    """An attempt's outcome in the outcomes to write and in the run's counts."""
    delivered = done.delivered
    if done.released:
        outcomes.add(done.action_id, status=ActionStatus.QUEUED, last_error=None)
        return
    if done.cancelled:
        outcomes.add(done.action_id, status=ActionStatus.CANCELLED,
                     last_error="cancelled: no invoice left to mention")
        result.cancelled += 1
        return
    if delivered is None and done.unknown:
        log.warning("action %s: outcome unknown: %s", done.action_id, done.error)
        outcomes.add(done.action_id, status=ActionStatus.UNKNOWN, last_error=done.error)
        result.unknown += 1
        result.errors.append({"action_id": done.action_id, "customer_id": done.customer_ref,
                              "error": brief(done.error or "")})
        return
    if delivered is None:
        if done.internal:
            log.error("action %s failed unexpectedly\n%s", done.action_id, done.internal)
        else:
            log.warning("action %s failed: %s", done.action_id, done.error)
        outcomes.add(done.action_id, status=ActionStatus.FAILED, last_error=done.error,
                     retryable=done.retryable)
        result.failed += 1
        result.errors.append({"action_id": done.action_id, "customer_id": done.customer_ref,
                              "error": brief(done.error or "")})
        return
    outcomes.add(done.action_id, delivered.after, status=ActionStatus.SENT,
                 provider_id=delivered.provider_id, document=delivered.document,
                 sent_at=utcnow(), last_error=None, retryable=True)
    result.sent += 1
    if delivered.document and kind in ("letter", "injunction"):
        result.files.append(delivered.document)
    if kind == "letter" and delivered.provider_id == POST_ONLY:
        result.post_only += 1


class _Outcomes:
    """What happened to each delivered action, written `batch` at a time."""

    def __init__(self, engine: Engine, batch: int) -> None:
        self.engine = engine
        self.batch = batch
        self.rows: list[dict[str, Any]] = []
        self.after: list[Callable[[Session], None]] = []

    def add(self, action_id: int, after: Callable[[Session], None] | None = None,
            **values: Any) -> None:
        if values.get("last_error"):  # the one place an outcome's error is written
            values["last_error"] = brief(values["last_error"])
        self.rows.append({"id": action_id, "updated_at": utcnow(), "provider_id": None,
                          "document": None, "sent_at": None} | values)
        if after is not None:
            self.after.append(after)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        with transaction(self.engine) as session:
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for row in self.rows:
                by_keys[tuple(sorted(row))].append(row)
            for rows in by_keys.values():  # one executemany per shape of outcome
                session.execute(update(Action), rows)
            for after in self.after:
                after(session)
        self.rows, self.after = [], []


def waiting_by_channel(engine: Engine, shard: Shard | None = None) -> dict[str, dict[str, int]]:
    """Undelivered actions per channel and status (of the shard's customers when given)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with transaction(engine) as session:
        for kind, status, n in session.execute(
            select(col(Action.kind), col(Action.status), func.count())
            .where(col(Action.status).in_((*UNDELIVERED, ActionStatus.SENDING)),
                   *in_shard(Action.customer_id, shard))
            .group_by(col(Action.kind), col(Action.status))
        ):
            out[kind][status] = n
    return dict(out)
