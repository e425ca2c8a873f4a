"""Runs: the business date of the ledger, the checks before a run, and each run's row (started,
finished, crashed, forgotten)."""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning.coltypes import utcnow
from dunning.errors import ConfigError, RunDateError
from dunning.models import Invoice, Run
from dunning.shards import Shard
from dunning.statuses import InvoiceState, RunStatus


def last_run_date(session: Session, shard: Shard | None = None) -> date | None:
    """The latest run's business date; for a shard, that of the latest run that covered some
    of its customers (an unsharded run, the same shard, or a shard of another N)."""
    if shard is None:
        return session.execute(select(func.max(col(Run.business_date)))).scalar()
    dates = [last for name, last in session.execute(
        select(col(Run.shard), func.max(col(Run.business_date))).group_by(col(Run.shard)))
        if shard.overlaps(Shard.of(name))]
    return max(dates, default=None)


def business_date(session: Session, today: date) -> date:
    """The ledger's current business date: that of the latest run, or today before any run."""
    return last_run_date(session) or today


def check_run_date(session: Session, as_of: date, shard: Shard | None = None) -> None:
    """Time does not go backwards: refuse a date earlier than the last run's (for a shard:
    the last run that covered some of its customers)."""
    last = last_run_date(session, shard)
    if last is not None and as_of < last:
        which = "the last run" if shard is None else f"the last run of shard {shard}"
        raise RunDateError(
            f"the business date {as_of} is earlier than {which} ({last}); a run may repeat "
            "the last date or move forward, never back. Nothing was changed."
        )


def check_stages(session: Session, stage_names: set[str]) -> None:
    """Refuse to run while open invoices sit at stages the policy no longer has: the ladder
    cannot tell where they stand (a renamed stage would start them over)."""
    unknown = session.execute(
        select(col(Invoice.stage), func.count())
        .where(col(Invoice.state) != InvoiceState.CLOSED, col(Invoice.stage).is_not(None),
               col(Invoice.stage).not_in(stage_names))
        .group_by(col(Invoice.stage))
    ).all()
    if unknown:
        listed = ", ".join(f"{stage} ({n} invoices)" for stage, n in unknown)
        raise ConfigError(f"stages: open invoices are at stages the policy does not define: "
                          f"{listed}; put those stages back (renaming a stage is not supported "
                          "yet). Nothing was changed.")


def start_run(session: Session, run_id: str, as_of: date, shard: Shard | None = None) -> Run:
    check_run_date(session, as_of, shard)
    run = Run(id=run_id, business_date=as_of, status=RunStatus.RUNNING,
              shard=None if shard is None else str(shard))
    session.add(run)
    session.flush()
    return run


def mark_crashed(session: Session, shard: Shard | None = None) -> list[dict[str, str]]:
    """Runs of the shard (exactly: "K/N", or None for the whole book) still `running` while
    the caller holds the shard's run lock died without finishing: mark them `crashed`."""
    label = None if shard is None else str(shard)
    dead = session.execute(
        select(col(Run.id), col(Run.business_date), col(Run.started_at))
        .where(col(Run.status) == RunStatus.RUNNING,
               col(Run.shard).is_(None) if label is None else col(Run.shard) == label)
        .order_by(col(Run.started_at))).all()
    if dead:
        session.execute(update(Run).where(col(Run.id).in_([row.id for row in dead]))
                        .values(status=RunStatus.CRASHED, finished_at=utcnow()))
    return [{"run_id": row.id, "as_of": row.business_date.isoformat(),
             "started_at": row.started_at.astimezone(UTC).isoformat()} for row in dead]


def forget_run(session: Session, run_id: str) -> None:
    """Remove the row of a run that stopped before it changed anything (a snapshot refused)."""
    session.execute(delete(Run).where(col(Run.id) == run_id,
                                      col(Run.status) == RunStatus.RUNNING))


def finish_run(session: Session, run_id: str, status: RunStatus,
               counts: dict[str, int]) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    values.update({key: value for key, value in counts.items() if hasattr(Run, key)})
    session.execute(update(Run).where(col(Run.id) == run_id).values(**values))

