"""Formal notices and the post: `dunning letters print` (the day's letters in one PDF, with the
registered-mail deposit list) and `dunning letter-posted` (the posting record)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dunning.cli.common import (
    JsonOption,
    app,
    emit,
    handles_errors,
    ledger_day,
    parse_date,
    print_json,
    who,
)

letters_app = typer.Typer(
    help="Formal notices to post by registered mail: print the day's letters.",
    no_args_is_help=True)
app.add_typer(letters_app, name="letters")


@letters_app.command("print")
@handles_errors
def letters_print(
    out: Annotated[Path, typer.Option("--out", metavar="FILE.pdf", help="The PDF to write; "
                                      "the deposit list is written beside it, as FILE.csv.")],
    on: Annotated[str | None, typer.Option(
        "--date", metavar="YYYY-MM-DD", help="The business date the letters were produced on "
        "(default: the last run's).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Merge the day's formal notices not yet posted into one PDF to print, with their
    registered-mail deposit list (CSV: recipient, address, reference, ...).

    Letters come by customer, then action. A letter leaves the list once its posting is
    recorded with `dunning letter-posted`. Nothing to post: nothing is written (exit 0)."""
    from dunning.posting import print_day

    with ledger_day() as (ctx, _, business_day):
        day = parse_date(on, "--date") or business_day
    printed = print_day(ctx.engine, day, out)
    if as_json:
        print_json(printed.as_dict())
    elif printed.pdf is None:
        typer.echo(f"no formal notice to post from {day}: nothing written")
    else:
        typer.echo(f"{len(printed.letters)} formal notice(s) of {day} to post, "
                   f"{printed.pages} page(s): {printed.pdf}; deposit list: "
                   f"{printed.deposit_list}")
    for letter in printed.letters:
        if not letter.address_line():
            typer.echo(f"dunning: action {letter.action_id} ({letter.customer_ref}): no postal "
                       "address on record; add it in the accounting system and write it on "
                       "the envelope", err=True)


@app.command("letter-posted")
@handles_errors
def letter_posted(
    action_id: int,
    posted_on: Annotated[str, typer.Option("--on", metavar="YYYY-MM-DD",
                                           help="The date it was handed to the post.")],
    by: Annotated[str, typer.Option("--by", help="Who posted it.")],
    tracking: Annotated[str | None, typer.Option(
        "--tracking", metavar="NUMBER", help="The registered-mail number (a formal notice's; "
                                             "a reminder letter goes by ordinary mail).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record that a letter was posted: a formal notice by registered mail, with its number,
    a reminder letter by ordinary mail; and the date.

    This record is the letter's proof of sending (the court file cites it) and lets the ladder
    go on from its stage. Recording the same again changes nothing; another number for a
    letter already recorded is refused (exit 2)."""
    from dunning.posting import record_posting

    name = who(by)
    when = parse_date(posted_on, "--on")
    with ledger_day() as (_, session, business_day):
        posting = record_posting(session, action_id, tracking, when, name, business_day)
    how = (f"by registered mail {posting.tracking}" if posting.tracking
           else "by ordinary mail")
    emit(posting.as_dict(), as_json,
         (f"letter {action_id}: posted on {posting.posted_on} {how}, recorded"
          if posting.recorded else
          f"letter {action_id}: already recorded as posted on {posting.posted_on} {how}; "
          "nothing changed"))
