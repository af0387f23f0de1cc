"""Small HTML form bodies, read without a multipart library: the unsubscribe form posts
`application/x-www-form-urlencoded`; RFC 8058 allows a one-click POST as either that or
`multipart/form-data`, so both are understood (text fields only)."""

from __future__ import annotations

import email.policy
from email import message_from_bytes
from email.message import EmailMessage
from urllib.parse import parse_qsl

from starlette.requests import Request

# The largest body the unsubscribe endpoints read; a reason is at most a few hundred characters.
MAX_FORM_BYTES = 16 * 1024


class FormTooLarge(Exception):
    """The body is larger than MAX_FORM_BYTES."""


async def read_form(request: Request) -> dict[str, str]:
    """The text fields of a small form body (the first value of a repeated field wins)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return _multipart_fields(content_type, bytes(body))
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def _multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    # A multipart body is a MIME message without its header: give it back the Content-Type
    # (and its boundary) and the standard library parses it.
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", errors="replace")
    message = message_from_bytes(head + body, policy=email.policy.HTTP)
    fields: dict[str, str] = {}
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and part.get_filename() is None and isinstance(payload, bytes):
            fields.setdefault(name, payload.decode("utf-8", errors="replace"))
    return fields
