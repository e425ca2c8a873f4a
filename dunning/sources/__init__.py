"""Snapshot readers: each turns the accounting system's open receivables into rows and rejects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dunning.policy import CsvSource, Policy, resolve_input
from dunning.sources.snapshot import CustomerRow, Reject, Snapshot

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dunning.shards import Shard
    from dunning.sources.rows import SnapshotBuilder
    from dunning.staging import Loader, Staged


def preflight(policy: Policy, policy_path: Path) -> None:
    """What can be checked of the source before anything starts, in a second or so: each CSV
    file opens, its header is sound (required columns, none twice), every byte is UTF-8, and
    the control manifest, if any, reads. Raises SnapshotError. An HTTP source is only its
    configuration, already checked with the policy."""
    source = policy.source
    if not isinstance(source, CsvSource):
        return
    from dunning.sources.control import read_manifest
    from dunning.sources.csv import check_file
    from dunning.sources.rows import CUSTOMER_REQUIRED, INVOICE_REQUIRED

    check_file(resolve_input(policy_path, source.customers), CUSTOMER_REQUIRED)
    check_file(resolve_input(policy_path, source.invoices), INVOICE_REQUIRED)
    if source.control is not None:
        read_manifest(resolve_input(policy_path, source.control.manifest))


def _check_control(source: CsvSource, policy_path: Path, builder: SnapshotBuilder) -> None:
    """Refuse an export whose row count or total differs from its manifest's."""
    if source.control is None:
        return
    from dunning.sources import control

    control.check(resolve_input(policy_path, source.control.manifest),
                  resolve_input(policy_path, source.invoices), builder.invoice_rows,
                  builder.amount_open_total)


def pull(policy: Policy, policy_path: Path) -> Snapshot:
    """Read the snapshot named by the policy's `source:` into memory."""
    source = policy.source
    if isinstance(source, CsvSource):
        from dunning.sources.csv import read_csv_builder

        builder = read_csv_builder(
            resolve_input(policy_path, source.customers),
            resolve_input(policy_path, source.invoices),
            default_language=policy.language,
            default_currency=policy.currency,
        )
        _check_control(source, policy_path, builder)
        return builder.snapshot
    from dunning.sources.http import read_http_snapshot

    return read_http_snapshot(source, default_language=policy.language,
                              default_currency=policy.currency)


def stage(policy: Policy, policy_path: Path, engine: Engine,
          shard: Shard | None = None) -> Staged:
    """Read the snapshot named by the policy into a staging table (`dunning.staging`): a CSV
    file is streamed, so memory does not grow with the number of invoices; an HTTP source is
    read whole first (a failed page must change nothing), then staged."""
    from dunning import staging

    staging.drop_leftovers(engine, shard)
    source = policy.source
    if isinstance(source, CsvSource):
        from dunning.sources.csv import stream_csv_snapshot

        def read_csv(loader: Loader) -> tuple[list[CustomerRow], list[Reject], str]:
            builder = stream_csv_snapshot(
                resolve_input(policy_path, source.customers),
                resolve_input(policy_path, source.invoices),
                loader.add, text_sink=loader.add_text, default_language=policy.language,
                default_currency=policy.currency,
                mine=None if shard is None else shard.holds)
            _check_control(source, policy_path, builder)
            return builder.customers(), builder.snapshot.rejects, builder.invoices_name

        return staging.stage_stream(engine, shard, read_csv)

    snapshot = pull(policy, policy_path)
    if shard is not None:
        snapshot = shard.split(snapshot)

    def read_snapshot(loader: Loader) -> tuple[list[CustomerRow], list[Reject], str]:
        staging.load_snapshot(loader, snapshot)
        return snapshot.customers, snapshot.rejects, ""

    return staging.stage_stream(engine, shard, read_snapshot)


__all__ = ["Snapshot", "preflight", "pull", "stage"]
