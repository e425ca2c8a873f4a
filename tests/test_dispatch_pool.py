"""Dispatch's worker processes (dunning/dispatch_pool.py): they write exactly what the run's own
process renders, through folders of their own; their reads never wait for the run's writer; what
they delivered is recorded even when the run fails; and the daily flow feeds them each batch."""

from __future__ import annotations

import email
import os
import time
from email import policy as email_policy
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from dunning import daily
from dunning.channels.email import Renderer
from dunning.channels.outbox import Outbox
from dunning.db import get_engine, get_reader, transaction
from dunning.dispatch import Dispatcher, dispatch
from dunning.messages import read_messages
from tests.conftest import Portfolio, query
from tests.helpers import change_policy, day, run

CUSTOMERS = 24


def _book(portfolio: Portfolio) -> None:
    """Customers with one to three overdue invoices each (a customer's invoices in one email),
    one in German, one without an email address."""
    for n in range(CUSTOMERS):
        customer = f"C{n:02d}"
        portfolio.customer(customer, email=None if n == 5 else "",
                           language="de" if n == 7 else "fr")
        for k in range(n % 3 + 1):
            portfolio.invoice(f"I{n:02d}{k}", customer, due=day(-10 - 9 * k),
                              amount=f"{100 + 37 * n + k}.50")
    portfolio.write()


def _evaluated(portfolio: Portfolio) -> daily.Context:
    _book(portfolio)
    ctx = daily.load_context()
    as_of = day(0)
    daily.reconcile(ctx, daily.pull_snapshot(ctx), as_of, "test-run")
    for low, high in daily.plan(ctx, None, as_of, "test-run"):
        daily.evaluate(ctx, as_of, "test-run", low, high)
    return ctx


def _written(folder: Path) -> dict[int, email.message.EmailMessage]:
    out = {}
    for path in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email_policy.default)
        assert isinstance(message, email.message.EmailMessage)
        out[int(path.name.split("_", 1)[0])] = message
    return out


def test_workers_write_what_the_run_renders(portfolio: Portfolio, db_url: str) -> None:
    ctx = _evaluated(portfolio)
    folder = portfolio.folder / "outbox"
    result = dispatch(ctx.engine, ctx.policy, Outbox(folder, ctx.policy), day(0), workers=2)
    assert result.workers == 2
    assert (result.sent, result.failed) == (CUSTOMERS - 1, 1)
    assert "customer C05 has no email address" in result.errors[0]["error"]
    assert query(db_url, "SELECT count(*) FROM action WHERE status = 'sending'")[0][0] == 0
    written = _written(folder)
    assert len(written) == CUSTOMERS - 1
    # The worker's hidden folders are gone with the workers.
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".eml")] == []
    # Each file holds what this process renders for its action, to the byte of each part.
    renderer = Renderer(ctx.policy)
    messages = read_messages(ctx.engine, list(written), day(0), ctx.policy)
    for action_id, parsed in written.items():
        _, message = messages[action_id]
        assert message is not None
        rendered = renderer.render(message)
        assert parsed["Subject"] == rendered.subject
        text_part = parsed.get_body(preferencelist=("plain",))
        html_part = parsed.get_body(preferencelist=("html",))
        assert text_part is not None and text_part.get_content() == rendered.text
        assert html_part is not None and html_part.get_content() == rendered.html
        images = [part.get_content() for part in parsed.walk()
                  if part.get_content_type() == "image/png"]
        assert images == [a.content for a in rendered.attachments if a.content_id]
    sent = query(db_url, "SELECT id, provider_id FROM action WHERE status = 'sent'")
    assert {row[0] for row in sent} == set(written)
    assert all(provider.startswith("outbox:") for _, provider in sent)


def test_without_workers_the_run_writes_the_same_files(portfolio: Portfolio) -> None:
    ctx = _evaluated(portfolio)
    result = dispatch(ctx.engine, ctx.policy, Outbox(portfolio.folder / "outbox", ctx.policy),
                      day(0), workers=0)
    assert (result.workers, result.sent, result.failed) == (0, CUSTOMERS - 1, 1)


def test_a_run_that_fails_after_feeding_records_what_its_workers_wrote(
        portfolio: Portfolio, db_url: str) -> None:
    ctx = _evaluated(portfolio)
    folder = portfolio.folder / "outbox"
    dispatcher = Dispatcher(ctx.engine, ctx.policy, Outbox(folder, ctx.policy), day(0),
                            workers=2, warm=True)
    dispatcher.feed()  # handed to the workers, not waited for
    dispatcher.close()  # the run failed here (flows/daily.py)
    statuses = dict(query(db_url, "SELECT status, count(*) FROM action GROUP BY status"))
    assert statuses == {"sent": CUSTOMERS - 1, "failed": 1}
    assert len(_written(folder)) == CUSTOMERS - 1


def test_a_reader_never_waits_for_the_writer_and_never_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dunning.db'}"
    with transaction(get_engine(url)) as session:
        session.execute(text("CREATE TABLE scratch (x INTEGER)"))
    with transaction(get_engine(url)) as session:  # BEGIN IMMEDIATE: the write lock, held
        session.execute(text("INSERT INTO scratch VALUES (1)"))
        began = time.perf_counter()
        with transaction(get_reader(url)) as reader:
            assert reader.execute(text("SELECT count(*) FROM scratch")).scalar_one() == 0
        assert time.perf_counter() - began < 2, "the reader waited for the writer"
    with transaction(get_reader(url)) as reader:
        assert reader.execute(text("SELECT count(*) FROM scratch")).scalar_one() == 1
    with pytest.raises(OperationalError, match="readonly"):
        with transaction(get_reader(url)) as reader:
            reader.execute(text("DELETE FROM scratch"))


def test_the_daily_flow_feeds_the_workers_batch_after_batch(
        portfolio: Portfolio, policy_file: Path, db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _book(portfolio)
    change_policy(policy_file, batch_size=10)  # a handful of batches of customers
    monkeypatch.setenv("DUNNING_DISPATCH_WORKERS", "2")
    report = run(day(0))
    assert report["dispatch"]["workers"] == 2
    assert (report["dispatch"]["sent"], report["dispatch"]["failed"]) == (CUSTOMERS - 1, 1)
    written = _written(portfolio.folder / "outbox")
    recipients = sorted(str(m["To"]) for m in written.values())
    assert recipients == sorted(f"ap@c{n:02d}.example" for n in range(CUSTOMERS) if n != 5)
    assert query(db_url, "SELECT count(*) FROM action WHERE status = 'sending'")[0][0] == 0
    # the next business day: nothing new to send, no worker started
    report = run(day(1))
    assert (report["dispatch"]["sent"], report["dispatch"]["workers"]) == (0, 0)
    assert [name for name in os.listdir(portfolio.folder / "outbox")
            if not name.endswith(".eml")] == [], "the workers' folders are gone"
