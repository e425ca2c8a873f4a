"""The `dunning` command. Only `run`, `serve` and `demo` import Prefect, so the others answer at
once.

    common    the app, the error handler and its hints, what the commands share
    db        dunning db upgrade
    run       dunning run: the daily flow once
    looking   status, history, actions
    people    approve, reject; calls and call-done; dispute, resolve, hold
    delivery  recover, redeliver, mark-sent, move-on; events serve
    letters   dunning letters print, dunning letter-posted
    agency    dunning agency sync, dunning agency export
    rates     dunning rates import
    serve     demo and serve
"""

from __future__ import annotations

from dunning.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()


# The commands register themselves on `app`, in the order `dunning --help` lists them.
from dunning.cli import db, run, looking, people, delivery, letters, agency, rates, serve  # noqa: E402,F401,I001
