"""`dunning db`: the schema of the dunning database."""

from __future__ import annotations

import typer

from dunning.cli.common import app, handles_errors

db_app = typer.Typer(help="The dunning database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or migrate the schema of DUNNING_DATABASE_URL to the newest version."""
    from dunning.db import upgrade
    from dunning.settings import load_settings

    revision = upgrade(load_settings().database_url)
    typer.echo(f"database at revision {revision}", err=True)

