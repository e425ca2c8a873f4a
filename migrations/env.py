"""Alembic environment: the connection is handed over by dunning.db.upgrade."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config


def _target_metadata():  # type: ignore[no-untyped-def]
    """The live models, for `alembic revision --autogenerate` only: an upgrade runs each
    revision's own description of the schema and never imports the tables as they are today."""
    if not context.is_offline_mode() and config.cmd_opts is not None and getattr(
            config.cmd_opts, "autogenerate", False):
        import dunning.models  # noqa: F401  (registers the tables)
        from sqlmodel import SQLModel

        return SQLModel.metadata
    return None


target_metadata = _target_metadata()


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.attributes.get("url") or config.get_main_option("sqlalchemy.url"))
        with engine.begin() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
