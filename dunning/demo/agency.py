"""A stand-in collection agency, for the demo and the tests: a local HTTP server that speaks the
agency API dunning expects (`POST /cases`, `GET /cases/{id}`; see schemas/).

It behaves like a careful agency: it checks the bearer token, honours `Idempotency-Key` (a case
sent twice is answered 409 with the id of the first), and at each status request moves its
cases along a fixed script, so the demo shows collections and a case given up:

  - each request after the first collects the next slice of the case (half of an invoice's
    open amount, then the rest), until all is collected (status `collected`);
  - a case whose debtor is in `insolvent` (or every `give_up_every`-th case) is closed as
    `unrecoverable` at its third request.

Tests can also make it fail: `fail_before` (answers given without storing the case, e.g. 500 or
429), `fail_after` (answers given after storing it, as when a response is lost), `delay`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Case:
    id: str
    key: str
    body: dict[str, Any]
    polls: int = 0
    status: str = "open"
    collected: dict[str, Decimal] = field(default_factory=dict)
    note: str | None = None


class AgencyDouble:
    def __init__(self, token: str, insolvent: set[str] | None = None,
                 give_up_every: int | None = None) -> None:
        self.token = token
        self.insolvent = insolvent or set()
        self.give_up_every = give_up_every  # every n-th case is given up, whoever the debtor
        self.cases: dict[str, Case] = {}
        self.by_key: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.fail_before: list[int] = []
        self.fail_after: list[int] = []
        self.delay: list[float] = []  # seconds to wait before answering, one per request
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        if not isinstance(host, str):  # an address given as bytes is reported as bytes
            host = bytes(host).decode("ascii")
        return f"http://{host}:{port}/api"

    # -- behaviour -----------------------------------------------------------------------------

    def open_case(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if self.fail_before:
                return self.fail_before.pop(0), {"message": "temporarily unavailable"}
            if key in self.by_key:
                return 409, {"id": self.by_key[key],
                             "message": "a case with this Idempotency-Key already exists"}
            missing = [k for k in ("reference", "creditor", "debtor", "invoices")
                       if not body.get(k)]
            if missing:
                return 422, {"message": f"missing fields: {', '.join(missing)}"}
            case = Case(id=f"AG-{len(self.cases) + 1:05d}", key=key, body=body)
            self.cases[case.id] = case
            self.by_key[key] = case.id
            if self.fail_after:
                return self.fail_after.pop(0), {"message": "gateway timeout"}
            return 201, {"id": case.id, "status": "open"}

    def status(self, case_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            case = self.cases.get(case_id)
            if case is None:
                return 404, {"message": f"no case {case_id}"}
            case.polls += 1
            if case.status == "open" and case.polls > 1:
                self._advance(case)
            return 200, {
                "id": case.id, "status": case.status, "note": case.note,
                "invoices": [{"invoice_id": ref, "collected": f"{amount:.2f}"}
                             for ref, amount in case.collected.items()],
            }

    def _advance(self, case: Case) -> None:
        debtor = case.body["debtor"].get("customer_id")
        number = int(case.id.split("-")[1])
        doomed = debtor in self.insolvent or (
            self.give_up_every is not None and number % self.give_up_every == 0)
        if doomed and case.polls >= 3:
            case.status = "unrecoverable"
            case.note = "debtor in judicial liquidation; claim filed with the liquidator"
            return
        for invoice in case.body["invoices"]:
            ref, open_amount = invoice["invoice_id"], Decimal(invoice["amount_open"])
            done = case.collected.get(ref, Decimal(0))
            if done < open_amount:
                half = (open_amount / 2).quantize(Decimal("0.01"))
                case.collected[ref] = half if done == 0 and half > 0 else open_amount
                return
        case.status = "collected"
        case.note = "paid in full to the agency; remittance on its way"


def _handler(agency: AgencyDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test): the case is kept

        def _authorised(self) -> bool:
            with agency.lock:
                agency.requests.append((self.command, self.path, dict(self.headers)))
                wait = agency.delay.pop(0) if agency.delay else 0.0
            if wait:
                threading.Event().wait(wait)
            if self.headers.get("Authorization") != f"Bearer {agency.token}":
                self._answer(401, {"message": "invalid or missing bearer token"})
                return False
            return True

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/api/cases":
                self._answer(404, {"message": "not found"})
                return
            key = self.headers.get("Idempotency-Key")
            if not key:
                self._answer(400, {"message": "Idempotency-Key header required"})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._answer(400, {"message": "body is not JSON"})
                return
            self._answer(*agency.open_case(key, body))

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            prefix = "/api/cases/"
            if not self.path.startswith(prefix):
                self._answer(404, {"message": "not found"})
                return
            self._answer(*agency.status(self.path[len(prefix):]))

    return Handler


@contextmanager
def running(token: str, insolvent: set[str] | None = None,
            give_up_every: int | None = None) -> Iterator[AgencyDouble]:
    """Serve an agency double on a free local port for the duration of the block."""
    agency = AgencyDouble(token, insolvent, give_up_every)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(agency))
    server.daemon_threads = True
    agency.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield agency
    finally:
        server.shutdown()
        server.server_close()
