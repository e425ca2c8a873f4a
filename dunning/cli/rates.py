"""`dunning rates import FILE`: the reference rate tables kept current from the central banks'
own CSV exports (dunning/rates_import.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dunning.cli.common import JsonOption, app, emit, handles_errors, parse_date

rates_app = typer.Typer(help="The reference rates of statutory interest.", no_args_is_help=True)
app.add_typer(rates_app, name="rates")


@rates_app.command("import")
@handles_errors
def rates_import(
    file: Annotated[Path, typer.Argument(help="The bank's CSV export: the ECB's main "
                                              "refinancing rate, the Bank of England's Bank "
                                              "Rate or the Bundesbank's base rate.")],
    through: Annotated[str | None, typer.Option(
        "--through", metavar="YYYY-MM-DD", help="The day the export was current: needed for a "
                                                "file of the dates of change only.")] = None,
    to: Annotated[Path | None, typer.Option(
        "--to", help="The tables to extend (default: DUNNING_RATES_FILE, else the shipped "
                     "config/rates.yaml).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would change; write "
                                                            "nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Extend a reference rate table from its central bank's CSV export: the changes after the
    table's `known_through`, and how far it is now complete. The rates the table already has
    must agree with the file (exit 2, nothing written, naming the line); comments and the other
    tables are kept."""
    from dunning.law import rates_file
    from dunning.rates_import import import_rates

    target = to or rates_file()
    result = import_rates(file, target, parse_date(through, "--through"), dry_run=dry_run)
    added = ", ".join(f"{day}: {rate}" for day, rate in result.added) or "no new change"
    emit(result.as_dict() | {"file": str(target), "dry_run": dry_run}, as_json,
         f"{result.table} ({result.kind}): {added}; complete through {result.known_through} "
         f"(was {result.known_through_before})"
         + (" (dry run: nothing written)" if dry_run else f", in {target}"))
