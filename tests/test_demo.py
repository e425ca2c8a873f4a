"""`dunning demo` on the embedded defaults: the sample portfolio walks up the ladder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dunning.db import get_engine, transaction
from dunning.demo.simulation import DEMO_TOKEN, _tallies
from tests.helpers import cli

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_the_demo_shows_the_ladder_at_work(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUNNING_CONFIG", raising=False)
    monkeypatch.delenv("DUNNING_AGENCY_TOKEN", raising=False)
    monkeypatch.setenv("DUNNING_DATABASE_URL", f"sqlite:///{workdir / 'dunning.db'}")
    # 9 business days, from 2026-10-01 to the first call tasks (letters, the agency and the
    # court file come later: tests/test_letters.py, test_agency.py and test_injunction.py).
    result = cli("demo", "--days", "9", "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    summary = json.loads(result.stdout)
    assert summary["days"][0] == "2026-10-01" and len(summary["days"]) == 9
    assert summary["outbox_files"] == summary["emails_sent"] > 40
    # One voice per customer: over twelve calendar days, at most two messages a week apart.
    voices = summary["messages_per_customer"]
    assert voices["customers"] > 20 and 1 <= voices["min"] <= voices["median"] <= voices["max"]
    assert voices["max"] <= 2
    assert summary["calls"], "collectors have a call list"
    assert {c["assignee"] for c in summary["calls"]} >= {"Julie Martin", "Marc Dubois"}
    assert summary["reached"]["phone_call"] >= len(summary["calls"])
    policy = Path(summary["policy"])
    assert "127.0.0.1" in policy.read_text(encoding="utf-8")
    assert "DUNNING_CONFIG" not in os.environ, "the demo leaves the environment as it was"
    assert "DUNNING_AGENCY_TOKEN" not in os.environ
    # Prefect records the policy each run was told to use, and never the agency's token.
    parameters = [run.parameters for run in _flow_runs()]
    assert sum(p.get("config") == summary["policy"] for p in parameters) == 9
    assert DEMO_TOKEN not in json.dumps(parameters)
    again = cli("demo", "--days", "1")
    assert again.exit_code == 2 and "empty database" in again.stderr
    # The printed summary shows plain words, not the enums the database's columns load as.
    with transaction(get_engine(os.environ["DUNNING_DATABASE_URL"])) as session:
        tallies = _tallies(session)
    assert tallies["by_state"]["active"] > 0 and "InvoiceState" not in repr(tallies)
    assert tallies["reached"]["phone_call"] == summary["reached"]["phone_call"]


def _flow_runs() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:  # the newest first: the suite's server is shared
        return client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=50)
