"""Fixtures: a real database (SQLite file or a fresh PostgreSQL schema), a policy and snapshot
written to files, and one Prefect test server for the whole session."""

from __future__ import annotations

import csv
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from dunning.db import dispose_engines, get_engine, transaction, upgrade  # noqa: E402

PG_URL = os.environ.get("DUNNING_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]


def _pg_available() -> bool:
    try:
        with create_engine(PG_URL).connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


PG_AVAILABLE = _pg_available()
# CI must not silently skip PostgreSQL: there, a missing server is a failure.
REQUIRE_PG = os.environ.get("CI") == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked sqlite_only run once, on SQLite: what they check does not depend on the
    database, and each costs several flow runs."""
    dropped = [item for item in items
               if item.get_closest_marker("sqlite_only") and "[postgresql]" in item.nodeid]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
    # The longest tests first, so that the workers do not wait on one of them at the end.
    items.sort(key=lambda item: item.module.__name__.rsplit(".", 1)[-1] not in SLOW_FIRST)


SLOW_FIRST = {"test_sharding", "test_incremental", "test_demo", "test_deployment"}


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One Prefect server for the suite (it takes 5-18 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty dunning database; the same tests run on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dunning.db'}"
        upgrade(url)
        yield url
        dispose_engines()
        return
    if not PG_AVAILABLE:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
        pytest.skip("PostgreSQL is not reachable")
    with pg_schema() as url:
        yield url


@contextmanager
def pg_schema() -> Iterator[str]:
    """A migrated dunning database in a fresh PostgreSQL schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def base_policy(tmp: Path) -> dict[str, Any]:
    policy = yaml.safe_load((REPO / "config" / "policy.yaml").read_text(encoding="utf-8"))
    policy["source"] = {"kind": "csv", "customers": str(tmp / "customers.csv"),
                        "invoices": str(tmp / "invoices.csv")}
    return policy


CUSTOMER_COLUMNS = ["customer_id", "name", "email", "phone", "language", "country",
                    "credit_limit", "segment", "collector", "address", "legal_id"]
INVOICE_COLUMNS = ["invoice_id", "customer_id", "number", "issue_date", "due_date", "currency",
                   "amount", "amount_open"]


@dataclass
class Portfolio:
    """Builds the accounting system's export, day after day, as files the run reads."""

    folder: Path
    customers: dict[str, dict[str, str]] = field(default_factory=dict)
    invoices: dict[str, dict[str, str]] = field(default_factory=dict)
    extra_invoice_lines: list[str] = field(default_factory=list)

    def customer(self, customer_id: str, *, name: str | None = None, email: str | None = "",
                 language: str = "en", country: str = "FR") -> None:
        self.customers[customer_id] = {
            "customer_id": customer_id, "name": name or f"Customer {customer_id} Ltd",
            "email": f"ap@{customer_id.lower()}.example" if email == "" else (email or ""),
            "phone": "+33 1 00 00 00 00", "language": language, "country": country,
            "credit_limit": "10000.00", "segment": "mid", "collector": "", "address": "",
            "legal_id": "",
        }

    def invoice(self, invoice_id: str, customer_id: str, due: date, amount: str = "1000.00",
                amount_open: str | None = None, currency: str = "EUR") -> None:
        self.invoices[invoice_id] = {
            "invoice_id": invoice_id, "customer_id": customer_id, "number": f"F-{invoice_id}",
            "issue_date": "", "due_date": due.isoformat(), "currency": currency,
            "amount": amount, "amount_open": amount if amount_open is None else amount_open,
        }

    def pay(self, invoice_id: str, amount_open: str = "0.00") -> None:
        self.invoices[invoice_id]["amount_open"] = amount_open

    def remove(self, invoice_id: str) -> None:
        del self.invoices[invoice_id]

    def write(self) -> None:
        for name, columns, rows in (
            ("customers.csv", CUSTOMER_COLUMNS, self.customers.values()),
            ("invoices.csv", INVOICE_COLUMNS, self.invoices.values()),
        ):
            with (self.folder / name).open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        if self.extra_invoice_lines:
            with (self.folder / "invoices.csv").open("a", encoding="utf-8") as handle:
                handle.writelines(line + "\n" for line in self.extra_invoice_lines)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    monkeypatch.delenv("SENDGRID_API_HOST", raising=False)
    monkeypatch.setenv("DUNNING_OUTBOX_DIR", str(tmp_path / "outbox"))
    return tmp_path


@pytest.fixture
def policy_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump(base_policy(workdir), allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("DUNNING_CONFIG", str(path))
    return path


@pytest.fixture
def portfolio(workdir: Path, policy_file: Path, db_url: str,
              monkeypatch: pytest.MonkeyPatch) -> Portfolio:
    """An empty portfolio wired to a fresh database, a policy and an outbox."""
    monkeypatch.setenv("DUNNING_DATABASE_URL", db_url)
    return Portfolio(workdir)


def query(db_url: str, sql: str, **params: Any) -> list[Any]:
    with transaction(get_engine(db_url)) as session:
        return list(session.execute(text(sql), params).all())


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers (a provider that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(256)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def sendgrid(httpserver: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """pytest-httpserver playing SendGrid, the real client pointed at it."""
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    monkeypatch.setenv("SENDGRID_API_HOST", httpserver.url_for("").rstrip("/"))
    return httpserver
