"""The daily run split into N shards by customer, run at once.

With `deployment` (e.g. "daily-dunning/daily-shard"), each shard is a flow run of that
deployment, started with `run_deployment` and parameters {"shard": "K/N", ...}: the runs land on
the deployment's work pool and N workers, on as many machines, take one each. Without it, the N
shards run here, as subflows called from tasks on a thread pool (one process, N database
connections at once; useful on one large machine, or to try sharding out).

Either way the parent waits for every shard, then fails if any shard failed: a failed shard's
customers were not dunned today, and rerunning that shard alone (`dunning run --shard K/N`) is
safe. Shards are disjoint, and every action is claimed before it is sent (FOR UPDATE SKIP
LOCKED on PostgreSQL), so no customer is dunned twice, whatever runs meanwhile.
"""

from collections import Counter
from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from dunning import daily
from dunning.errors import ConfigError, DunningError
from flows.daily import daily_dunning

MAX_LOCAL_SHARDS = 16  # threads (and database connections) of the subflow mode


@task(name="shard", cache_policy=NO_CACHE, task_run_name="shard-{shard}")
def run_shard(shard: str, as_of: date, dry_run: bool, accept_mass_settlement: bool,
              deployment: str | None, parent: str | None,
              config: str | None = None) -> dict[str, Any]:
    """One shard: a flow run of `deployment` (waited for), or the daily flow as a subflow.
    `config`, the policy file, is passed on when given (a deployment otherwise keeps its own)."""
    if deployment is None:
        report = daily_dunning(as_of=as_of, dry_run=dry_run,
                               accept_mass_settlement=accept_mass_settlement, shard=shard,
                               config=config)
        return {"shard": shard, "state": "COMPLETED", "flow_run_id": report["run_id"],
                "report": report}
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    parameters: dict[str, Any] = {"as_of": as_of.isoformat(), "shard": shard,
                                  "dry_run": dry_run,
                                  "accept_mass_settlement": accept_mass_settlement}
    if config is not None:
        parameters["config"] = config
    # Prefect types run_deployment (sync_compatible) as returning a coroutine or a FlowRun;
    # called from synchronous code it returns the FlowRun.
    run: FlowRun = run_deployment(  # type: ignore[assignment]
        name=deployment,
        parameters=parameters,
        flow_run_name=f"dunning-{as_of.isoformat()}-shard-{shard.replace('/', '-of-')}",
        # A retried parent finds the shard's run instead of starting a second one.
        idempotency_key=f"{parent}:{shard}" if parent else None,
        timeout=None,  # wait for it to finish
    )
    state = run.state
    return {"shard": shard, "state": state.type.value if state else "UNKNOWN",
            "flow_run_id": str(run.id), "report": None,
            "message": state.message if state else None}


def _totals(reports: list[dict[str, Any]]) -> dict[str, Any]:
    entered: Counter[str] = Counter()
    created: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    for report in reports:
        entered.update(report["evaluation"]["entered"])
        created.update(report["evaluation"]["actions_created"])
        sums["invoices"] += report["evaluation"]["invoices"]
        sums["transitions"] += report["evaluation"]["transitions"]
        sums["settled"] += report["reconcile"]["settled"]
        for channel in ("dispatch", "letters"):
            for key in ("sent", "failed", "would_send"):
                sums[key] += report[channel][key]
    return {"entered": dict(entered), "actions_created": dict(created), **sums}


# Prefect's flow() expects a TaskRunner[PrefectFuture[Any]]; the generic is invariant, so its own
# ThreadPoolTaskRunner (of PrefectConcurrentFuture) does not type-check as one.
@flow(name="sharded-dunning", log_prints=False,
      task_runner=ThreadPoolTaskRunner(max_workers=MAX_LOCAL_SHARDS))  # type: ignore[arg-type]
def sharded_dunning(as_of: date | None = None, shards: int = 2, deployment: str | None = None,
                    dry_run: bool = False, accept_mass_settlement: bool = False,
                    config: str | None = None) -> dict[str, Any]:
    """Run the daily flow as `shards` shard runs at once, for one business date (default:
    today in the policy's time zone, computed once so that every shard agrees).

    `deployment`: the daily flow's deployment to start per shard (on its work pool);
    none: the shards run here as concurrent subflows. `config` is the policy file, as for the
    daily flow (default: DUNNING_CONFIG, else ./config/policy.yaml, else the shipped one); each
    shard is given it."""
    logger = get_run_logger()
    if shards < 1 or (deployment is None and shards > MAX_LOCAL_SHARDS):
        limit = "" if deployment else f" (at most {MAX_LOCAL_SHARDS} without a deployment)"
        raise ConfigError(f"shards: {shards} is not a number of shards ≥ 1{limit}")
    as_of = as_of or daily.load_context(config).today()
    parent = str(flow_run.id) if flow_run.id else None
    names = [f"{k}/{shards}" for k in range(1, shards + 1)]
    logger.info("dunning %s in %d shards %s", as_of, shards,
                f"on deployment {deployment}" if deployment else "as subflows")
    futures = [run_shard.submit(name, as_of, dry_run, accept_mass_settlement, deployment, parent,
                                config)
               for name in names]
    outcomes: dict[str, dict[str, Any]] = {}
    for name, future in zip(names, futures, strict=True):
        future.wait()
        try:
            outcomes[name] = future.result()
        except Exception as exc:  # reported below, once every shard has finished
            outcomes[name] = {"shard": name, "state": "FAILED", "flow_run_id": None,
                              "report": None, "message": str(exc)}
    failed = [name for name, outcome in outcomes.items() if outcome["state"] != "COMPLETED"]
    reports = [o["report"] for o in outcomes.values() if o["report"] is not None]
    summary = {"as_of": as_of.isoformat(), "shards": outcomes, "failed": failed,
               "totals": _totals(reports) if len(reports) == shards else None}
    if failed:
        details = "; ".join(f"{name}: {outcomes[name]['state']} "
                            f"{outcomes[name].get('message') or ''}".strip() for name in failed)
        raise DunningError(f"shard(s) {', '.join(failed)} of {as_of} did not complete ({details}); "
                           "the others did. Rerun those with `dunning run --shard K/N "
                           f"--as-of {as_of}`.")
    return summary
