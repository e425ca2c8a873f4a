"""The .eml outbox: each message written as a file in a folder, for when no SendGrid key is set
(and for demos and tests)."""

from __future__ import annotations

import base64
import uuid
from email.utils import formataddr, formatdate, make_msgid
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

from dunning.channels.message import Rendered
from dunning.files import safe_name, write_atomically
from dunning.policy import Policy


class Outbox:
    """Writes each message as an .eml file; the file name carries the action id."""

    name = "outbox"

    def __init__(self, folder: Path, policy: Policy, staging: Path | None = None) -> None:
        self.folder = folder
        self.policy = policy
        self.staging = staging  # where a message is written before its rename into `folder`

    def send(self, message: Rendered, action_id: int, key: str) -> str:
        return self.write(action_id, key, self.serialise(message, key))

    def write(self, action_id: int, key: str, content: bytes) -> str:
        """Write a serialised message; returns the provider id recorded for it."""
        path = self.folder / f"{action_id:08d}_{safe_name(key)}.eml"
        try:
            write_atomically(path, content, self.staging)
        except FileNotFoundError:  # the folder does not exist yet
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.staging is not None:
                self.staging.mkdir(parents=True, exist_ok=True)
            write_atomically(path, content, self.staging)
        return f"outbox:{path.name}"

    @cached_property
    def _sender(self) -> tuple[str, ...]:
        """The headers every message shares."""
        email = self.policy.email
        address = email.from_address if email else (self.policy.creditor.email or "")
        name = (email.from_name if email else None) or self.policy.creditor.name
        sender = formataddr((name, address)) if name.isascii() else \
            f"{encode_header(name)} <{address}>"
        out: tuple[str, ...] = (f"From: {sender}",)
        if email and email.reply_to:
            out += (f"Reply-To: {email.reply_to}",)
        return out

    def serialise(self, message: Rendered, key: str) -> bytes:
        """The message as RFC 5322 bytes, written directly: the stdlib's generator spends
        milliseconds folding headers, and a first run writes one message per few invoices."""
        alternative = _boundary()
        body = [
            f'Content-Type: multipart/alternative; boundary="{alternative}"',
            "MIME-Version: 1.0",
        ]
        html = _part(alternative, "text/html; charset=\"utf-8\"", message.html.encode())
        inline = [item for item in message.attachments if item.content_id]
        if inline:
            # RFC 2387: the HTML and the images it shows (`cid:`) as one multipart/related,
            # the alternative to the text
            related = _boundary()
            html = (f"--{alternative}\nContent-Type: multipart/related; "
                    f'type="text/html"; boundary="{related}"\n\n'
                    + _part(related, "text/html; charset=\"utf-8\"", message.html.encode())
                    + "".join(_part(related, item.mimetype, item.content,
                                    f"Content-ID: <{item.content_id}>\n"
                                    f"Content-Disposition: inline; "
                                    f"{_filename(item.filename)}\n") for item in inline)
                    + f"--{related}--\n")
        parts = [_part(alternative, "text/plain; charset=\"utf-8\"", message.text.encode()),
                 html, f"--{alternative}--\n"]
        attached = [item for item in message.attachments if not item.content_id]
        if attached:
            mixed = _boundary()
            head = [f'Content-Type: multipart/mixed; boundary="{mixed}"', "MIME-Version: 1.0"]
            inner = "\n".join(body[:1]) + "\n\n" + "".join(parts)
            parts = [f"--{mixed}\n{inner}"]
            for item in attached:
                parts.append(_part(mixed, item.mimetype, item.content,
                                   f"Content-Disposition: attachment; "
                                   f"{_filename(item.filename)}\n"))
            parts.append(f"--{mixed}--\n")
            body = head
        headers = body + [
            f"Subject: {encode_header(message.subject)}",
            *self._sender,
            f"To: {', '.join(message.recipients)}",
            f"Date: {formatdate(localtime=False)}",
            f"Message-ID: {make_msgid(domain='dunning.local')}",
            f"X-Dunning-Action: {key}",
        ]
        return ("\n".join(headers) + "\n\n" + "".join(parts)).encode("ascii")


def encode_header(text: str) -> str:
    """A header value, as RFC 2047 encoded words when it is not plain ASCII."""
    if text.isascii():
        return text
    words: list[str] = []
    start = size = 0
    for i, char in enumerate(text):  # each word's UTF-8 stays whole and under 75 characters
        width = 1 if char < "\x80" else 2 if char < "\u0800" else 3 if char < "\U00010000" else 4
        if size + width > 45:
            words.append(text[start:i])
            start, size = i, 0
        size += width
    words.append(text[start:])
    return "\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words)


def _boundary() -> str:
    return f"==============={uuid.uuid4().hex}=="


def _filename(name: str) -> str:
    if name.isascii() and '"' not in name and "\\" not in name:
        return f'filename="{name}"'
    return f"filename*=utf-8''{quote(name)}"


def _part(boundary: str, content_type: str, payload: bytes, extra: str = "") -> str:
    return (f"--{boundary}\nContent-Type: {content_type}\nMIME-Version: 1.0\n"
            f"Content-Transfer-Encoding: base64\n{extra}\n"
            f"{_base64_lines(payload)}")


def _base64_lines(payload: bytes) -> str:
    """`base64.encodebytes(payload)` (lines of 76 characters), without its loop of a call per
    57 bytes."""
    text = base64.b64encode(payload).decode("ascii")
    return "\n".join([text[i:i + 76] for i in range(0, len(text), 76)]) + "\n" if text else ""
