"""The daily deployment: `dunning serve` registers it with Prefect, and prefect.yaml declares
the same schedule."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DUNNING = shutil.which("dunning", path=str(Path(sys.executable).parent)) or "dunning"


async def _deployment() -> object | None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            return await client.read_deployment_by_name("daily-dunning/daily")
        except ObjectNotFound:
            return None


@pytest.mark.usefixtures("prefect_server")
def test_serve_registers_the_weekday_schedule(tmp_path: Path) -> None:
    from prefect.settings import get_current_settings

    env = os.environ | {"PREFECT_API_URL": str(get_current_settings().api.url),
                        "DUNNING_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}
    env.pop("DUNNING_CONFIG", None)
    server = subprocess.Popen([DUNNING, "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deployment = None
        deadline = time.monotonic() + 90
        while deployment is None and time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(1)
            deployment = asyncio.run(_deployment())
        assert deployment is not None, "dunning serve did not register the deployment"
        schedules = [s.schedule for s in deployment.schedules]  # type: ignore[attr-defined]
        assert [(s.cron, s.timezone) for s in schedules] == [("30 6 * * 1-5", "Europe/Paris")]
        limit = deployment.global_concurrency_limit  # type: ignore[attr-defined]
        assert limit is not None and limit.limit == 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_prefect_yaml_declares_the_same_deployment() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from flows.serve import SCHEDULE

    config = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = {d["name"]: d for d in config["deployments"]}
    assert sorted(deployments) == ["daily", "daily-shard", "sharded"]
    daily = deployments["daily"]
    assert daily["name"] == "daily" and daily["concurrency_limit"] == 1
    assert daily["schedules"] == [{"cron": SCHEDULE, "timezone": "Europe/Paris", "active": True}]
    assert daily["work_pool"]["name"] == "dunning"
    flow = load_flow_from_entrypoint(str(REPO / daily["entrypoint"]))
    assert flow.name == "daily-dunning"
    text = (REPO / "prefect.yaml").read_text(encoding="utf-8")
    assert "SENDGRID_API_KEY:" not in text and "SG." not in text, "no secrets in prefect.yaml"


def test_prefect_yaml_declares_the_sharded_run() -> None:
    """`sharded` starts runs of `daily-shard` (no schedule, no limit of one: the shards run at
    once); its own schedule is off, so that only one of `daily` and `sharded` is ever active."""
    from prefect.flows import load_flow_from_entrypoint

    from flows.serve import SCHEDULE

    config = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = {d["name"]: d for d in config["deployments"]}
    shard, parent = deployments["daily-shard"], deployments["sharded"]
    assert shard["entrypoint"] == deployments["daily"]["entrypoint"]
    assert "schedules" not in shard and "concurrency_limit" not in shard
    assert parent["parameters"]["deployment"] == "daily-dunning/daily-shard"
    assert parent["concurrency_limit"] == 1
    assert parent["schedules"] == [{"cron": SCHEDULE, "timezone": "Europe/Paris",
                                    "active": False}]
    assert {shard["work_pool"]["name"], parent["work_pool"]["name"]} == {"dunning"}
    flow = load_flow_from_entrypoint(str(REPO / parent["entrypoint"]))
    assert flow.name == "sharded-dunning"
    assert set(flow.parameters.properties) >= {"as_of", "shards", "deployment"}
