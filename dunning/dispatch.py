"""Dispatch: deliver queued and approved actions from the outbox table, claiming each one before
calling out so that no action is ever delivered twice."""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Engine, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from dunning.channels.email import (
    Attachment,
    Composed,
    Composer,
    Letter,
    Line,
    Outbox,
    Renderer,
    SendGrid,
    compose_in_worker,
    start_composer,
)
from dunning.channels.letter import keep, render_pdf
from dunning.db import transaction
from dunning.errors import DeliveryError
from dunning.ledger import chunks
from dunning.models import Action, ActionInvoice, Customer, Invoice, utcnow
from dunning.policy import Policy
from dunning.shards import Shard, in_shard

log = logging.getLogger("dunning.dispatch")
CLAIM_CHUNK = 100
# A first run writes a message per few invoices: from this many, emails to the outbox folder are
# rendered by POOL_WORKERS processes (starting them costs about a second), with at most
# POOL_AHEAD claimed chunks handed out ahead of the one being written.
POOL_MIN_MESSAGES = 2000
POOL_WORKERS = 2
POOL_AHEAD = 2 * POOL_WORKERS


class Claimed(NamedTuple):
    """What delivering a claimed action needs of its row (channels read `customer_id` and
    `dedupe_key`)."""

    id: int
    customer_id: int
    dedupe_key: str
    kind: str
    stage: str


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

    def as_dict(self) -> dict[str, Any]:
        out = {"channel": self.channel, "sent": self.sent, "failed": self.failed,
               "cancelled": self.cancelled, "would_send": self.would_send,
               "in_flight": self.in_flight, "errors": self.errors}
        if self.channel in ("letter", "injunction"):
            out["files"] = self.files
        return out


def dispatch_email(engine: Engine, policy: Policy, transport: Outbox | SendGrid | None,
                   as_of: date, *, dry_run: bool = False) -> DispatchResult:
    return dispatch(engine, policy, transport, as_of, kind="email", dry_run=dry_run)


def _claimable(policy: Policy, kind: str, as_of: date) -> Any:
    max_attempts = policy.email.max_attempts if policy.email else 5
    return and_(
        Action.kind == kind,
        or_(
            Action.status.in_(("queued", "approved")),
            # A failure is retried by a later business day, never by a rerun of the same one.
            and_(Action.status == "failed", Action.retryable.is_(True),
                 Action.attempts < max_attempts,
                 or_(Action.attempted_on.is_(None), Action.attempted_on < as_of)),
        ),
    )


def _letters(
    engine: Engine, ids: list[int], as_of: date
) -> dict[int, tuple[Claimed, Letter | None]]:
    """The claimed actions with what their messages say (None: no invoice left to mention).

    Plain rows, not ORM entities: a first run reads a hundred thousand of them, and building
    entities cost more than rendering the messages."""
    out: dict[int, tuple[Claimed, Letter | None]] = {}
    with transaction(engine) as session:
        rows = session.execute(
            select(Action.id, Action.customer_id, Action.dedupe_key, Action.kind, Action.stage,
                   Action.template, Customer.external_id, Customer.name, Customer.language,
                   Customer.country, Customer.email, Customer.address, Customer.legal_id,
                   Customer.phone)
            .join(Customer, Customer.id == Action.customer_id)
            .where(Action.id.in_(ids))
        ).all()
        lines: dict[int, list[Line]] = defaultdict(list)
        for (action_id, number, external_id, issue_date, due_date, currency, amount,
             amount_open) in session.execute(
            select(ActionInvoice.action_id, Invoice.number, Invoice.external_id,
                   Invoice.issue_date, Invoice.due_date, Invoice.currency, Invoice.amount,
                   Invoice.amount_open)
            .join(Invoice, Invoice.id == ActionInvoice.invoice_id)
            .where(ActionInvoice.action_id.in_(ids), ActionInvoice.dropped_reason.is_(None))
            .order_by(ActionInvoice.action_id, Invoice.due_date, Invoice.id)
        ):
            lines[action_id].append(Line(
                number=number or external_id, issue_date=issue_date, due_date=due_date,
                currency=currency, amount=amount, amount_open=amount_open,
                days_overdue=(as_of - due_date).days, invoice_ref=external_id,
            ))
    reminders: dict[int, list[tuple[date, str]]] = defaultdict(list)
    if any(row.kind != "email" for row in rows):
        with transaction(engine) as session:
            for customer_id, when, stage in session.execute(
                select(Action.customer_id, Action.business_date, Action.stage)
                .where(Action.customer_id.in_({row.customer_id for row in rows}),
                       Action.status == "sent", Action.kind.in_(("email", "phone")))
                .order_by(Action.business_date, Action.id)
            ):
                reminders[customer_id].append((when, stage))
    for (action_id, customer_id, dedupe_key, kind, stage, template, customer_ref, name,
         language, country, email, address, legal_id, phone) in rows:
        action = Claimed(action_id, customer_id, dedupe_key, kind, stage)
        if not lines[action_id]:
            out[action_id] = (action, None)
            continue
        recipients = tuple(a.strip() for a in (email or "").split(";") if a.strip())
        out[action_id] = (action, Letter(
            customer_ref=customer_ref, customer_name=name, language=language, country=country,
            recipients=recipients, stage=stage, template=template or stage, as_of=as_of,
            lines=tuple(lines[action_id]), customer_address=address, customer_legal_id=legal_id,
            reminders=tuple(reminders[customer_id]), customer_phone=phone,
        ))
    return out


def _claim(engine: Engine, claimable: Any, as_of: date, ids: list[int]) -> Iterator[list[int]]:
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
            update(Action).where(Action.id.in_(chunk), claimable)
            .values(status="sending", attempts=Action.attempts + 1, attempted_on=as_of,
                    updated_at=utcnow())
            .returning(Action.id).execution_options(synchronize_session=False)
        ).scalars())

    if engine.dialect.name == "postgresql":
        while True:
            with transaction(engine) as session:
                locked = list(session.execute(
                    select(Action.id).where(claimable).order_by(Action.id).limit(CLAIM_CHUNK)
                    .with_for_update(skip_locked=True, of=Action)).scalars())
                claimed = take(session, locked) if locked else []
            if not claimed:
                return
            yield claimed
    for chunk in chunks(ids, CLAIM_CHUNK):
        with transaction(engine) as session:
            claimed = take(session, chunk)
        if claimed:
            yield claimed


@dataclass
class Delivered:
    """What a channel did with an action: the provider's id for it, the file it produced, and
    rows to write in the same transaction that marks the action sent."""

    provider_id: str | None = None
    document: str | None = None
    after: Callable[[Session], None] | None = None


class Channel(Protocol):
    kind: str

    def deliver(self, action_id: int, action: Claimed, letter: Letter) -> Delivered: ...


def _no_address(letter: Letter) -> DeliveryError:
    # Retrying would fail the same way every morning: fail once, visibly.
    return DeliveryError(f"customer {letter.customer_ref} has no email address; add one in the "
                         "accounting system", retryable=False)


class MessageChannel:
    """Emails, and formal notices: a PDF kept in the letters folder and sent as an attachment
    of a cover email."""

    def __init__(self, kind: str, transport: Outbox | SendGrid, policy: Policy,
                 letters_dir: Path | None) -> None:
        self.kind = kind
        self.transport = transport
        self.policy = policy
        self.letters_dir = letters_dir
        self.renderer = Renderer(policy)

    def poolable(self, messages: int) -> bool:
        """Worth rendering in worker processes: many emails to the outbox folder on a machine
        with cores to spare (SendGrid waits on the network; letters are few)."""
        return (self.kind == "email" and isinstance(self.transport, Outbox)
                and messages >= POOL_MIN_MESSAGES and (os.cpu_count() or 1) > 1)

    def deliver(self, action_id: int, action: Claimed, letter: Letter) -> Delivered:
        if not letter.recipients:
            raise _no_address(letter)
        if self.kind == "email":
            message = self.renderer.render(letter)
            return Delivered(self.transport.send(message, action_id, action.dedupe_key))
        assert self.letters_dir is not None
        pdf, context = render_pdf(letter, self.policy)
        path = keep(pdf, self.letters_dir, action_id, letter)
        message = self.renderer.render(letter, extra={"deadline": context["deadline"]},
                                       attachments=(Attachment(path.name, pdf, "application/pdf"),))
        return Delivered(self.transport.send(message, action_id, action.dedupe_key),
                         document=str(path))


def dispatch(
    engine: Engine, policy: Policy, transport: Outbox | SendGrid | Channel | None, as_of: date,
    *, kind: str = "email", letters_dir: Path | None = None, dry_run: bool = False,
    shard: Shard | None = None,
) -> DispatchResult:
    """Deliver every claimable action of a channel, of the shard's customers when given:
    `email`; `letter` (a PDF sent as an attachment and kept for registered post); `agency` or
    `injunction` (given their Channel). With `dry_run` (or no transport) only count."""
    result = DispatchResult(channel=kind)
    claimable = and_(_claimable(policy, kind, as_of), *in_shard(Action.customer_id, shard))
    with transaction(engine) as session:
        ids = list(session.execute(
            select(Action.id).where(claimable).order_by(Action.id)).scalars())
        result.in_flight = session.execute(
            select(func.count()).select_from(Action)
            .where(Action.kind == kind, Action.status == "sending",
                   *in_shard(Action.customer_id, shard))).scalar_one()
    if dry_run or transport is None:
        result.would_send = len(ids)
        return result
    channel: Channel = transport if hasattr(transport, "deliver") else MessageChannel(
        kind, transport, policy, letters_dir)  # type: ignore[arg-type]

    # Emails and letters record their outcomes a claimed chunk at a time (one transaction per
    # hundred messages rather than per message). A crash in between leaves that chunk `sending`:
    # never sent again by itself, reported as in flight. Agency cases and court files are
    # recorded one by one, with the rows they add.
    record = _Record(result, _Outcomes(engine, 1 if kind in ("agency", "injunction")
                                       else CLAIM_CHUNK))
    if isinstance(channel, MessageChannel) and channel.poolable(len(ids)):
        _dispatch_pooled(engine, claimable, as_of, ids, channel, record)
        return result
    for claimed in _claim(engine, claimable, as_of, ids):
        for action_id, (action, letter) in sorted(_letters(engine, claimed, as_of).items()):
            if letter is None:
                record.cancelled(action_id)
                continue
            try:
                delivered = channel.deliver(action_id, action, letter)
            except DeliveryError as exc:
                record.failed(action_id, letter, str(exc), exc.retryable)
                continue
            except Exception as exc:  # a bug must not stop the other customers' messages
                log.exception("action %s failed unexpectedly", action_id)
                record.failed(action_id, letter, repr(exc), unexpected=True)
                continue
            record.sent(action_id, delivered, kind)
        record.outcomes.flush()
    return result


def _dispatch_pooled(engine: Engine, claimable: Any, as_of: date, ids: list[int],
                     channel: MessageChannel, record: _Record) -> None:
    """Emails to the outbox folder, rendered by worker processes (rendering is most of the CPU
    a message costs) while this process claims, writes the files and records the outcomes.

    Workers get plain data and return bytes: each action is claimed here before it is handed
    out, written here once, and its outcome recorded here. A worker that fails (or dies) costs
    only time: its chunk is composed again here."""
    assert isinstance(channel.transport, Outbox)
    outbox = channel.transport
    local = Composer(channel.policy, outbox, channel.renderer.root)
    ahead: deque[tuple[dict[int, tuple[str, Letter]], Future[list[Composed]] | None]] = deque()

    def finish(letters: dict[int, tuple[str, Letter]],
               future: Future[list[Composed]] | None) -> None:
        items = [(action_id, key, letter) for action_id, (key, letter) in letters.items()]
        try:
            composed = future.result() if future is not None else local.compose(items)
        except Exception as exc:  # e.g. BrokenProcessPool
            log.warning("a rendering worker failed (%r): %d messages rendered in the "
                        "dispatching process", exc, len(items))
            composed = local.compose(items)
        for done in composed:
            key, letter = letters[done.action_id]
            if done.content is None:
                if done.unexpected:
                    log.error("action %s failed unexpectedly: %s", done.action_id, done.error)
                record.failed(done.action_id, letter, done.error or "", done.retryable,
                              unexpected=done.unexpected)
                continue
            try:
                provider_id = outbox.write(done.action_id, key, done.content)
            except Exception as exc:
                log.exception("action %s failed unexpectedly", done.action_id)
                record.failed(done.action_id, letter, repr(exc), unexpected=True)
                continue
            record.sent(done.action_id, Delivered(provider_id), "email")
        record.outcomes.flush()

    with ProcessPoolExecutor(POOL_WORKERS, mp_context=get_context("spawn"),
                             initializer=start_composer,
                             initargs=(channel.policy, outbox, str(channel.renderer.root))) as pool:
        for claimed in _claim(engine, claimable, as_of, ids):
            letters: dict[int, tuple[str, Letter]] = {}
            for action_id, (action, letter) in sorted(_letters(engine, claimed, as_of).items()):
                if letter is None:
                    record.cancelled(action_id)
                elif not letter.recipients:
                    error = _no_address(letter)
                    record.failed(action_id, letter, str(error), error.retryable)
                else:
                    letters[action_id] = (action.dedupe_key, letter)
            future: Future[list[Composed]] | None = None
            if letters:
                try:
                    future = pool.submit(compose_in_worker, [
                        (i, key, letter) for i, (key, letter) in letters.items()])
                except Exception as exc:  # the pool broke: this chunk is composed here
                    log.warning("rendering workers unavailable (%r)", exc)
            ahead.append((letters, future))
            # Claimed chunks waiting to be written stay few: a crash leaves them in flight.
            while len(ahead) > POOL_AHEAD:
                finish(*ahead.popleft())
        while ahead:
            finish(*ahead.popleft())


class _Record:
    """Counts each outcome in the run's result and queues it for the database."""

    def __init__(self, result: DispatchResult, outcomes: _Outcomes) -> None:
        self.result = result
        self.outcomes = outcomes

    def cancelled(self, action_id: int) -> None:
        self.outcomes.add(action_id, status="cancelled",
                          last_error="cancelled: no invoice left to mention")
        self.result.cancelled += 1

    def failed(self, action_id: int, letter: Letter, error: str, retryable: bool = True,
               unexpected: bool = False) -> None:
        self.outcomes.add(action_id, status="failed", retryable=retryable,
                          last_error=f"internal error: {error}" if unexpected else error)
        self.result.failed += 1
        self.result.errors.append({"action_id": action_id, "customer_id": letter.customer_ref,
                                   "error": error})
        if not unexpected:
            log.warning("action %s failed: %s", action_id, error)

    def sent(self, action_id: int, delivered: Delivered, kind: str) -> None:
        self.outcomes.add(action_id, delivered.after, status="sent",
                          provider_id=delivered.provider_id, document=delivered.document,
                          sent_at=utcnow(), last_error=None, retryable=True)
        self.result.sent += 1
        if delivered.document and kind in ("letter", "injunction"):
            self.result.files.append(delivered.document)


class _Outcomes:
    """What happened to each delivered action, written `batch` at a time."""

    def __init__(self, engine: Engine, batch: int) -> None:
        self.engine = engine
        self.batch = batch
        self.rows: list[dict[str, Any]] = []
        self.after: list[Callable[[Session], None]] = []

    def add(self, action_id: int, after: Callable[[Session], None] | None = None,
            **values: Any) -> None:
        self.rows.append({"id": action_id, "updated_at": utcnow(), "provider_id": None,
                          "document": None, "sent_at": None} | values)
        if after is not None:
            self.after.append(after)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = Action.__table__
        with transaction(self.engine) as session:
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for row in self.rows:
                by_keys[tuple(sorted(row))].append(row)
            for keys, rows in by_keys.items():
                # One Core executemany per shape of outcome (the ORM's bulk update by primary
                # key spent more per row than the rest of recording).
                columns = [key for key in keys if key != "id"]
                session.execute(
                    update(table).where(table.c.id == bindparam("_id"))
                    .values({key: bindparam(f"_{key}") for key in columns}),
                    [{f"_{key}": value for key, value in row.items()} for row in rows])
            for after in self.after:
                after(session)
        self.rows, self.after = [], []


def waiting_by_channel(engine: Engine, shard: Shard | None = None) -> dict[str, dict[str, int]]:
    """Undelivered actions per channel and status (of the shard's customers when given)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with transaction(engine) as session:
        for kind, status, n in session.execute(
            select(Action.kind, Action.status, func.count())
            .where(Action.status.in_(("pending_approval", "approved", "queued", "failed",
                                      "sending")), *in_shard(Action.customer_id, shard))
            .group_by(Action.kind, Action.status)
        ):
            out[kind][status] = n
    return dict(out)
