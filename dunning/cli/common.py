"""What the commands share: the app, the one place where dunning's exceptions become exit codes
(with the command line's hints), options, dates, sessions, tables."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Annotated, Any, TypeVar, overload

import typer

from dunning.errors import ConfigError, DunningError, MassSettlement, NotFoundError, RunDateError

app = typer.Typer(
    name="dunning",
    help="Chase unpaid B2B invoices up an escalation ladder, every business day.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)

F = TypeVar("F", bound=Callable[..., Any])
# The domain's refusals name what is wrong, not the command's options: the option that answers
# each is the command line's own hint, a sentence or, when it depends on what the error says,
# a function of the error (None: no hint). Commands add theirs (see dunning/cli/people.py).
Hint = str | Callable[[DunningError], str | None]
HINTS: dict[type[DunningError], Hint] = {
    RunDateError: "The business date is --as-of (default: today in the policy's time zone).",
    MassSettlement: "To confirm them, run again with --accept-mass-settlement.",
    NotFoundError: lambda exc: {"action": "See `dunning actions`.",
                                "call task": "See `dunning calls`."}.get(
        getattr(exc, "what", None) or ""),
}
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"dunning: {message}", err=True)
    return typer.Exit(code)


def handles_errors(command: F) -> F:
    """Turn dunning's exceptions into a message on stderr and the documented exit status."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DunningError as exc:
            raise fail(" ".join([str(exc), *_hints(exc)]), exc.exit_code) from None

    # functools.wraps types the wrapper as _Wrapped, not as the command it wraps.
    return wrapper  # type: ignore[return-value]


def _hints(exc: DunningError) -> list[str]:
    """The command line's hints for an error, in the order of HINTS."""
    out = []
    for kind, hint in HINTS.items():
        if isinstance(exc, kind):
            text = hint if isinstance(hint, str) else hint(exc)
            if text:
                out.append(text)
    return out


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit(result: dict[str, Any], as_json: bool, sentence: str) -> None:
    """A command's outcome: JSON on stdout with --json, else one sentence."""
    if as_json:
        print_json(result)
    else:
        typer.echo(sentence)


def who(by: str) -> str:
    if not by.strip():
        raise ConfigError("--by: give the name of the person")
    return by.strip()


@overload
def parse_date(value: str, option: str) -> date: ...
@overload
def parse_date(value: str | None, option: str) -> date | None: ...


def parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option}: {value!r} is not a date (expected YYYY-MM-DD)") from None


def policy_context() -> Any:
    from dunning.context import load_context

    return load_context()


def quiet_prefect(quiet: bool) -> None:
    """Prefect logs progress on a terminal; piped or with --json, only warnings."""
    # The ephemeral server would try to reach Prefect's analytics service on every start.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if quiet or not sys.stderr.isatty():
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def open_session() -> Any:
    from dunning.db import require_schema, transaction
    from dunning.settings import load_settings

    return transaction(require_schema(load_settings().database_url))


@contextmanager
def ledger_day() -> Iterator[tuple[Any, Any, date]]:
    """The policy context, a session, and the ledger's business date (the last run's, or
    today before any run): what people record is dated like the run it follows."""
    from dunning.ledger import business_date

    ctx = policy_context()
    with open_session() as session:
        yield ctx, session, business_date(session, ctx.today())


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*["" if row[c] is None else
                        (", ".join(row[c]) if isinstance(row[c], list) else str(row[c]))
                        for c in columns])
    Console().print(table)
