"""Alembic's schema is the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
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
