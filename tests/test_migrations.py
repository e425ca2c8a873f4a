"""Alembic's schema is the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

import dunning.models  # noqa: F401
from dunning.db import current_revision, get_engine, upgrade


def test_migrations_match_the_models(db_url: str) -> None:
    engine = get_engine(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_upgrade_is_idempotent(db_url: str) -> None:
    first = current_revision(get_engine(db_url))
    assert first is not None
    assert upgrade(db_url) == first


def test_existing_customers_get_their_shard_key(db_url: str) -> None:
    """0006 backfills customer.shard_key with crc32 of the id, as new customers get it."""
    from alembic import command

    from dunning.db import _alembic_config
    from dunning.shards import shard_key

    engine = get_engine(db_url)
    config = _alembic_config(db_url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
        connection.execute(text(
            "INSERT INTO customer (external_id, name, language, updated_at) VALUES "
            "('C1', 'One', 'fr', CURRENT_TIMESTAMP), ('Zürich-7', 'Two', 'de', "
            "CURRENT_TIMESTAMP)"))
    assert upgrade(db_url) == "0012"
    with engine.connect() as connection:
        keys = dict(connection.execute(text("SELECT external_id, shard_key FROM customer")).all())
    assert keys == {"C1": shard_key("C1"), "Zürich-7": shard_key("Zürich-7")}


def test_migrations_do_not_import_the_live_models() -> None:
    """A revision describes the schema of its own day: loading every one (and the environment)
    leaves dunning.models unimported, so a later change to a table cannot rewrite history."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "migrations"
    script = (
        "import importlib.util, sys, pathlib\n"
        f"for path in sorted(pathlib.Path({str(root / 'versions')!r}).glob('*.py')):\n"
        "    spec = importlib.util.spec_from_file_location(path.stem, path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "assert 'dunning.models' not in sys.modules, 'a migration imports dunning.models'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_invoices_get_the_action_of_their_current_stage(db_url: str) -> None:
    """0012 backfills invoice.stage_action_id with the action of the latest transition to the
    invoice's current stage: not an earlier stage's, none for an invoice without one."""
    from alembic import command

    from dunning.db import _alembic_config

    engine = get_engine(db_url)
    config = _alembic_config(db_url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")
        connection.execute(text(
            "INSERT INTO customer (id, external_id, name, language, shard_key, updated_at) "
            "VALUES (1, 'C1', 'One', 'fr', 1, CURRENT_TIMESTAMP)"))
        connection.execute(text(
            "INSERT INTO invoice (id, external_id, customer_id, due_date, currency, amount, "
            "amount_open, stage, stage_entered_on, state, updated_at) VALUES "
            "(1, 'I1', 1, '2026-01-01', 'EUR', 10, 10, 'second', '2026-02-01', 'active', "
            "CURRENT_TIMESTAMP), "
            "(2, 'I2', 1, '2026-01-01', 'EUR', 10, 10, NULL, NULL, 'active', CURRENT_TIMESTAMP)"))
        for action_id, stage in ((7, "first"), (9, "second"), (11, "first")):
            connection.execute(text(
                "INSERT INTO action (id, dedupe_key, kind, stage, customer_id, status, "
                "business_date, attempts, retryable, created_at, updated_at) VALUES "
                f"({action_id}, 'k{action_id}', 'email', '{stage}', 1, 'sent', '2026-02-01', "
                "1, true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        for action_id, stage in ((7, "first"), (9, "second"), (11, "first")):
            connection.execute(text(
                "INSERT INTO transition (invoice_id, event, to_stage, state, business_date, at, "
                f"reason, actor, action_id) VALUES (1, 'stage', '{stage}', 'active', "
                f"'2026-02-01', CURRENT_TIMESTAMP, 'r', 'dunning', {action_id})"))
    assert upgrade(db_url) == "0012"
    with engine.connect() as connection:
        found = dict(connection.execute(
            text("SELECT external_id, stage_action_id FROM invoice")).all())
    assert found == {"I1": 9, "I2": None}
