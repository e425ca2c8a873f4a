"""The HTTP endpoint of SendGrid's Event Webhook: `POST /events/sendgrid`, served alone by
`dunning events serve` and mountable in another FastAPI app (`router`).

A request is taken only when signed by SendGrid: its `X-Twilio-Email-Event-Webhook-Signature`
(ECDSA P-256 over the timestamp and the body) verifies with the public key in
`SENDGRID_WEBHOOK_PUBLIC_KEY` (the `sendgrid` package's helper) and its timestamp is at most
MAX_AGE old: an unsigned request answers 401, a forged or stale one 403, and nothing is
recorded. The events are then recorded and applied (dunning/delivery_events.py)."""

from __future__ import annotations

import binascii
import json
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dunning.settings import secret

PUBLIC_KEY_ENV = "SENDGRID_WEBHOOK_PUBLIC_KEY"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_AGE = 600  # seconds: a replayed request older than this is refused
MAX_BODY = 8 * 1024 * 1024  # SendGrid posts batches of about a thousand events (under 1 MB)

router = APIRouter()


def _refuse(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


@router.post("/events/sendgrid")
async def sendgrid_events(request: Request) -> JSONResponse:
    key = secret(PUBLIC_KEY_ENV)
    if not key:
        return _refuse(503, f"{PUBLIC_KEY_ENV} is not set: events cannot be verified")
    signature, stamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
    if not signature or not stamp:
        return _refuse(401, "unsigned: the Event Webhook's signature and timestamp are missing")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_AGE:
        return _refuse(403, f"stale: the timestamp is not within {MAX_AGE} s of now")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return _refuse(413, f"the body is over {MAX_BODY} bytes")
    body = await request.body()
    if len(body) > MAX_BODY:
        return _refuse(413, f"the body is over {MAX_BODY} bytes")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        return _refuse(400, "the body is not UTF-8")
    try:
        valid = _verifies(key, payload, signature, stamp)
    except ValueError as exc:  # the key in the environment is not a public key
        return _refuse(503, f"{PUBLIC_KEY_ENV} is not a usable public key: {exc}")
    if not valid:
        return _refuse(403, "forged: the signature does not verify")
    try:
        events = json.loads(payload)
    except json.JSONDecodeError:
        return _refuse(400, "the body is not JSON")
    if not isinstance(events, list):
        return _refuse(400, "the body is not a list of events")
    return JSONResponse(await run_in_threadpool(_receive, events))


def _verifies(key: str, payload: str, signature: str, stamp: str) -> bool:
    from sendgrid.helpers.eventwebhook import EventWebhook

    webhook = EventWebhook()
    public = webhook.convert_public_key_to_ecdsa(key.strip())
    try:
        return bool(webhook.verify_signature(payload, signature, stamp, public))
    except (binascii.Error, ValueError, TypeError):  # a signature that is not base64 DER
        return False


def _receive(events: list[Any]) -> dict[str, Any]:
    from dunning import ledger
    from dunning.context import load_context
    from dunning.db import require_schema, transaction
    from dunning.delivery_events import receive

    ctx = load_context()
    with transaction(require_schema(ctx.settings.database_url)) as session:
        today = ledger.business_date(session, ctx.today())
        return receive(session, ctx.policy, events, today).as_dict()


def create_app() -> FastAPI:
    app = FastAPI(title="dunning: delivery events", docs_url=None, redoc_url=None)
    app.include_router(router)
    return app
