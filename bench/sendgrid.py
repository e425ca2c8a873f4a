"""Dispatch through SendGrid at its pace: a local double of SendGrid's Mail Send answers 202
after a latency (150 ms, as measured from Europe) and counts the posts by dedupe key; the
benchmark queues N emails (N customers, one overdue invoice each: one email each) and times
their dispatch with the real `sendgrid` client.

    python bench/sendgrid.py [--messages 10000] [--latency 0.15] [--concurrency 16,32]

Prints per concurrency: messages sent, seconds, messages a second, the dispatching process's
CPU seconds, and duplicates (dedupe keys posted more than once; must be 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# This file has the `sendgrid` package's name: its folder must not shadow the package.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]


def _floor() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("floor", HERE / "floor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


clone_database = _floor().clone_database  # type: ignore[attr-defined]
AS_OF = date(2026, 11, 2)


class Double(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, latency: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency = latency
        self.keys: Counter[str] = Counter()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        assert isinstance(server, Double)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(server.latency)
        with server.lock:
            server.keys[body["custom_args"]["dunning_action_key"]] += 1
            number = sum(server.keys.values())
        self.send_response(202)
        self.send_header("X-Message-Id", f"bench-{number}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def prepare(messages: int) -> tuple[Path, Path]:
    """A database with `messages` queued emails, built once per size."""
    folder = HERE / "out" / f"sendgrid-{messages}"
    ready = folder / "ready.db"
    policy = folder / "policy.yaml"
    if ready.exists():
        return ready, policy
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with (folder / "customers.csv").open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["customer_id", "name", "email", "language", "country"])
        for n in range(messages):
            out.writerow([f"C{n:06d}", f"Client {n} SARL", f"ap@c{n}.example", "fr", "FR"])
    with (folder / "invoices.csv").open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["invoice_id", "customer_id", "number", "issue_date", "due_date",
                      "currency", "amount", "amount_open"])
        for n in range(messages):
            due = AS_OF - timedelta(days=10)
            out.writerow([f"I{n:06d}", f"C{n:06d}", f"F{n:06d}", "", due.isoformat(), "EUR",
                          f"{100 + n % 900}.50", f"{100 + n % 900}.50"])
    data = yaml.safe_load((REPO / "config" / "policy.yaml").read_text(encoding="utf-8"))
    data["source"] = {"kind": "csv", "customers": str(folder / "customers.csv"),
                      "invoices": str(folder / "invoices.csv")}
    policy.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    url = f"sqlite:///{folder / 'prepare.db'}"
    os.environ.update({"DUNNING_DATABASE_URL": url, "DUNNING_CONFIG": str(policy)})
    from dunning import daily
    from dunning.db import dispose_engines, upgrade

    upgrade(url)
    ctx = daily.load_context()
    daily.reconcile(ctx, daily.pull_snapshot(ctx), AS_OF, "bench-prepare")
    for low, high in daily.plan(ctx):
        daily.evaluate(ctx, AS_OF, "bench-prepare", low, high)
    dispose_engines()
    clone_database(url, "ready")
    return ready, policy


def dispatch_once(ready: Path, policy: Path, concurrency: int, latency: float) -> dict[str, float]:
    url = clone_database(f"sqlite:///{ready}", f"run-{uuid.uuid4().hex[:8]}")
    data = yaml.safe_load(policy.read_text(encoding="utf-8"))
    data["email"]["concurrency"] = concurrency
    run_policy = policy.with_name(f"policy-{concurrency}.yaml")
    run_policy.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    double = Double(latency)
    threading.Thread(target=double.serve_forever, daemon=True).start()
    os.environ.update({"DUNNING_DATABASE_URL": url, "DUNNING_CONFIG": str(run_policy),
                       "SENDGRID_API_KEY": "SG.bench",
                       "SENDGRID_API_HOST": f"http://127.0.0.1:{double.server_address[1]}"})
    from dunning import daily
    from dunning.db import dispose_engines

    ctx = daily.load_context()
    own = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    result = daily.dispatch(ctx, AS_OF)
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    double.shutdown()
    dispose_engines()
    Path(url.split(":///", 1)[1]).unlink(missing_ok=True)
    return {"sent": result.sent, "failed": result.failed, "unknown": result.unknown,
            "seconds": seconds,
            "cpu": after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime,
            "duplicates": sum(1 for n in double.keys.values() if n > 1),
            "posts": sum(double.keys.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--concurrency", default="16,32")
    args = parser.parse_args()
    ready, policy = prepare(args.messages)
    print(f"{'concurrency':>11} {'sent':>6} {'failed':>6} {'unknown':>7} {'seconds':>8} "
          f"{'msg/s':>7} {'cpu s':>6} {'dupes':>5} {'load':>5}")
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        load = os.getloadavg()[0]
        r = dispatch_once(ready, policy, concurrency, args.latency)
        print(f"{concurrency:>11} {r['sent']:>6} {r['failed']:>6} {r['unknown']:>7} "
              f"{r['seconds']:>8.1f} {r['sent'] / r['seconds']:>7.0f} {r['cpu']:>6.1f} "
              f"{r['duplicates']:>5} {load:>5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
