"""A local SMTP server that accepts everything and keeps it: the embedded mail catcher.

Run alone: `python -m devtools.smtp_sink --smtp-port 1025 --http-port 8025`, then open the HTTP
port to see what was "sent" (JSON at /messages). Tests use `SmtpSink` in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route


def free_port() -> int:
    """A TCP port nobody listens on right now (aiosmtpd's Controller cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message, parsed."""

    envelope_from: str
    recipients: tuple[str, ...]
    message: EmailMessage
    received_at: datetime

    def body(self, subtype: str) -> str:
        """The text of the `plain` or `html` part."""
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content())

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "from": self.envelope_from,
            "to": list(self.recipients),
            "subject": str(self.message["Subject"]),
            "message_id": str(self.message["Message-ID"]),
            "headers": {k: str(v) for k, v in self.message.items()},
            "text": self.body("plain"),
            "html": self.body("html"),
            "received_at": self.received_at.isoformat(),
        }


@dataclass
class SmtpSink:
    """Accepts every message on 127.0.0.1:`port` and keeps the most recent ones in memory."""

    port: int = field(default_factory=free_port)
    keep: int = 10_000
    messages: list[ReceivedMessage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """aiosmtpd hook: keep the message."""
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        parsed = message_from_bytes(content, policy=policy.default)
        received = ReceivedMessage(
            str(envelope.mail_from),
            tuple(envelope.rcpt_tos),
            parsed,
            datetime.now(UTC),
        )
        with self._lock:
            self.messages.append(received)
            del self.messages[: -self.keep]
        return "250 Message accepted"

    def start(self) -> SmtpSink:
        """Listen (in aiosmtpd's own thread)."""
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[ReceivedMessage]:
        """A copy of the kept messages, oldest first."""
        with self._lock:
            return list(self.messages)

    def count_by_recipient(self) -> Counter[str]:
        """How many messages each recipient received."""
        return Counter(r for m in self.received() for r in m.recipients)


# Dates on screen are Brazilian local time; stored and served as UTC.
_SHOWN_IN = ZoneInfo("America/Sao_Paulo")


def web_app(sink: SmtpSink) -> Starlette:
    """The page that shows what the sink received."""

    async def messages(_: Request) -> JSONResponse:
        return JSONResponse([m.summary() for m in reversed(sink.received())])

    async def index(_: Request) -> HTMLResponse:
        rows = "".join(
            f"<tr><td>{m.received_at.astimezone(_SHOWN_IN):%d/%m/%Y %H:%M:%S}</td><td>{html.escape(', '.join(m.recipients))}</td>"
            f"<td>{html.escape(str(m.message['Subject']))}</td>"
            f'<td><details><summary>ver</summary><iframe sandbox srcdoc="{html.escape(m.body("html"))}"'
            f' style="width:100%;height:300px;border:1px solid #ccc"></iframe></details></td></tr>'
            for m in reversed(sink.received())
        )
        page = (
            '<!doctype html><html lang="pt-BR"><meta charset="utf-8"><title>Caixa de saída local</title>'
            "<style>body{font-family:sans-serif;margin:2rem}table{border-collapse:collapse;width:100%}"
            "td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}</style>"
            f"<h1>Caixa de saída local</h1><p>{len(sink.received())} mensagem(ns) recebida(s).</p>"
            f"<table><tr><th>Recebida em</th><th>Para</th><th>Assunto</th><th>Conteúdo</th></tr>{rows}</table>"
        )
        return HTMLResponse(page)

    return Starlette(routes=[Route("/", index), Route("/messages", messages)])


def main() -> None:
    """Command line: run the sink and its page until interrupted."""
    parser = argparse.ArgumentParser(description="Local SMTP sink with a page of what it received.")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025)
    args = parser.parse_args()
    sink = SmtpSink(port=args.smtp_port).start()
    try:
        config = uvicorn.Config(web_app(sink), host="127.0.0.1", port=args.http_port, log_level="warning")
        asyncio.run(uvicorn.Server(config).serve())
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
