"""Snapshot readers: each turns the accounting system's open receivables into rows and rejects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dunning.policy import CsvSource, Policy, resolve_input
from dunning.sources.snapshot import Snapshot

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dunning.shards import Shard
    from dunning.staging import Loader, Staged


def pull(policy: Policy, policy_path: Path) -> Snapshot:
    """Read the snapshot named by the policy's `source:` into memory."""
    source = policy.source
    if isinstance(source, CsvSource):
        from dunning.sources.csv import read_csv_snapshot

        return read_csv_snapshot(
            resolve_input(policy_path, source.customers),
            resolve_input(policy_path, source.invoices),
            default_language=policy.language,
            default_currency=policy.currency,
        )
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

        def read_csv(loader: Loader) -> tuple[list, list, str]:  # type: ignore[type-arg]
            builder = stream_csv_snapshot(
                resolve_input(policy_path, source.customers),
                resolve_input(policy_path, source.invoices),
                loader.add, text_sink=loader.add_text, default_language=policy.language,
                default_currency=policy.currency,
                mine=None if shard is None else shard.holds)
            return builder.customers(), builder.snapshot.rejects, builder.invoices_name

        return staging.stage_stream(engine, shard, read_csv)

    snapshot = pull(policy, policy_path)
    if shard is not None:
        snapshot = shard.split(snapshot)

    def read_snapshot(loader: Loader) -> tuple[list, list, str]:  # type: ignore[type-arg]
        staging.load_snapshot(loader, snapshot)
        return snapshot.customers, snapshot.rejects, ""

    return staging.stage_stream(engine, shard, read_snapshot)


__all__ = ["Snapshot", "pull", "stage"]
