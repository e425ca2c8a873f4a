"""The daily deployment: prefect.yaml's deployments go to a real Prefect server with the
README's commands, `dunning serve` registers its own, and both declare the same schedule."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from flows.serve import SCHEDULE, SERVED_NAME
from tests.helpers import DUNNING

REPO = Path(__file__).resolve().parents[1]
PREFECT = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prefect_api(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real `prefect server start` of its own (Prefect's home in tmp_path), as an operator
    runs it; yields the environment that points the prefect and dunning commands at it."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k != "DUNNING_CONFIG"}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if requests.get(f"{api}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "prefect server did not start in 120 s"
            time.sleep(0.5)
        yield env | {"PREFECT_API_URL": api}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done


def _deployment(env: dict[str, str], name: str) -> dict[str, Any] | None:
    answer = requests.get(f"{env['PREFECT_API_URL']}/deployments/name/{name}", timeout=10)
    return answer.json() if answer.ok else None


def _schedules(env: dict[str, str], name: str) -> list[dict[str, Any]]:
    return json.loads(_prefect(env, "deployment", "schedule", "ls", name, "-o", "json").stdout)


def test_deploy_list_and_serve_against_a_prefect_server(prefect_api: dict[str, str],
                                                        tmp_path: Path) -> None:
    """The README's deployment steps, against a real server: the pool, `prefect deploy --all`,
    the lists, moving the schedule to `sharded`; then `dunning serve` registers its own
    deployment and leaves prefect.yaml's `daily` as it was."""
    env = prefect_api | {"DUNNING_HOME": str(REPO)}
    _prefect(env, "work-pool", "create", "dunning", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")
    listed = _prefect(env, "deployment", "ls").stdout
    for name in ("daily-dunning/daily", "daily-dunning/daily-shard", "sharded-dunning/sharded"):
        assert name in listed
    assert "dunning" in _prefect(env, "work-pool", "ls").stdout

    # README, "Running on several machines": the schedule moves from `daily` to `sharded`.
    (daily_schedule,) = _schedules(env, "daily-dunning/daily")
    (sharded_schedule,) = _schedules(env, "sharded-dunning/sharded")
    assert (daily_schedule["active"], sharded_schedule["active"]) == (True, False)
    _prefect(env, "deployment", "schedule", "pause", "daily-dunning/daily",
             daily_schedule["id"])
    _prefect(env, "deployment", "schedule", "resume", "sharded-dunning/sharded",
             sharded_schedule["id"])
    assert [s["active"] for s in _schedules(env, "daily-dunning/daily")] == [False]
    assert [s["active"] for s in _schedules(env, "sharded-dunning/sharded")] == [True]
    _prefect(env, "deployment", "schedule", "resume", "daily-dunning/daily",
             daily_schedule["id"])
    before = _deployment(env, "daily-dunning/daily")
    assert before is not None and before["work_pool_name"] == "dunning"

    serve_env = env | {"DUNNING_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}
    server = subprocess.Popen([DUNNING, "serve"], env=serve_env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        served = None
        deadline = time.monotonic() + 90
        while served is None and time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(1)
            served = _deployment(env, f"daily-dunning/{SERVED_NAME}")
        assert served is not None, "dunning serve did not register its deployment"
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in served["schedules"]] \
            == [(SCHEDULE, "Europe/Paris")]
        assert served["global_concurrency_limit"]["limit"] == 1
        assert served["id"] != before["id"] and served["work_pool_name"] is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    after = _deployment(env, "daily-dunning/daily")
    assert after is not None and after["id"] == before["id"]
    assert after["work_pool_name"] == "dunning", "serve must not move `daily` off its pool"
    assert [s["active"] for s in after["schedules"]] == [True], "nor pause its schedule"


def test_prefect_yaml_declares_the_same_deployment() -> None:
    from prefect.flows import load_flow_from_entrypoint

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
