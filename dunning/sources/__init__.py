"""Snapshot readers: each turns the accounting system's open receivables into rows and rejects."""

from __future__ import annotations

from pathlib import Path

from dunning.policy import CsvSource, Policy, resolve_input
from dunning.sources.snapshot import Snapshot


def pull(policy: Policy, policy_path: Path) -> Snapshot:
    """Read the snapshot named by the policy's `source:`."""
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


__all__ = ["Snapshot", "pull"]
