"""SendGrid: each message delivered through its v3 Mail Send API with the official client."""

from __future__ import annotations

import base64
from typing import Any

from dunning.channels.message import Rendered
from dunning.errors import DeliveryError
from dunning.policy import Policy

CUSTOM_ARG = "dunning_action_key"  # lets SendGrid's event webhook be matched to our action


class SendGrid:
    """Delivers through SendGrid's v3 Mail Send with the official client."""

    name = "sendgrid"

    def __init__(self, api_key: str, policy: Policy, host: str | None = None) -> None:
        from sendgrid import SendGridAPIClient

        if policy.email is None:
            raise DeliveryError("the policy has no `email:` section (from address)",
                                retryable=False)
        self.policy = policy
        self.email = policy.email
        kwargs: dict[str, Any] = {"api_key": api_key}
        if host:
            kwargs["host"] = host
        self.client = SendGridAPIClient(**kwargs)
        # The client has no timeout by default and would wait forever on a stalled connection.
        self.client.client.timeout = self.email.timeout

    def send(self, message: Rendered, action_id: int, key: str) -> str:
        from python_http_client.exceptions import HTTPError
        from sendgrid.helpers.mail import Attachment as SendGridAttachment
        from sendgrid.helpers.mail import (
            Category,
            ContentId,
            CustomArg,
            Disposition,
            FileContent,
            FileName,
            FileType,
            Mail,
            ReplyTo,
        )

        mail = Mail(
            from_email=(self.email.from_address, self.email.from_name or
                        self.policy.creditor.name),
            to_emails=list(message.recipients),
            subject=message.subject,
            plain_text_content=message.text,
            html_content=message.html,
        )
        if self.email.reply_to:
            mail.reply_to = ReplyTo(self.email.reply_to)
        mail.custom_arg = [CustomArg(CUSTOM_ARG, key), CustomArg("dunning_action_id",
                                                                   str(action_id))]
        mail.category = Category("dunning")
        for item in message.attachments:
            # An image the HTML shows (`cid:`) is inline, with its Content-ID
            mail.add_attachment(SendGridAttachment(
                FileContent(base64.b64encode(item.content).decode("ascii")),
                FileName(item.filename), FileType(item.mimetype),
                Disposition("inline" if item.content_id else "attachment"),
                ContentId(item.content_id) if item.content_id else None))
        try:
            response = self.client.send(mail)
        except HTTPError as exc:
            status = getattr(exc, "status_code", 0) or 0
            body = getattr(exc, "body", b"") or b""
            detail = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            retryable = status >= 500 or status == 429
            raise DeliveryError(f"SendGrid answered {status}: {detail[:500]}",
                                retryable=retryable,
                                retry_after=_reset(exc) if status == 429 else None) from None
        except OSError as exc:  # TimeoutError, URLError, a connection reset...
            if _never_sent(exc):
                raise DeliveryError(f"SendGrid unreachable: {exc!r}") from None
            # The request may have reached SendGrid, which may have taken the message.
            raise DeliveryError(f"SendGrid did not answer (the message may have gone out): "
                                f"{exc!r}", unknown=True) from None
        headers = getattr(response, "headers", {}) or {}
        message_id = headers.get("X-Message-Id") or headers.get("x-message-id")
        return f"sendgrid:{message_id or 'accepted'}"


def _never_sent(exc: BaseException) -> bool:
    """Whether the error came before the whole request had left: urllib wraps an error while
    connecting or sending in URLError (SendGrid acts on a whole request only); one while waiting
    for the answer (a TimeoutError, a RemoteDisconnected, a reset) comes as it is."""
    from urllib.error import URLError

    return isinstance(exc, URLError)


def _reset(exc: BaseException) -> float:
    """Seconds until SendGrid takes calls again after a 429: its `X-RateLimit-Reset` (the epoch
    second the limit resets), else one second."""
    import time

    headers = getattr(exc, "headers", None) or {}
    value = headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset")
    try:
        reset = float(str(value))
    except ValueError:  # absent ("None") or not a number
        return 1.0
    return max(0.0, min(reset - time.time(), 3600.0))
