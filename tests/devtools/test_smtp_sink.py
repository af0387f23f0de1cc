"""The local SMTP sink: keeps what it receives and shows it in Brazilian local time."""

from __future__ import annotations

from datetime import UTC, datetime

import aiosmtplib
import httpx

from devtools.smtp_sink import SmtpSink, web_app


class TestSmtpSink:
    async def test_keeps_and_counts_what_it_receives(self, sink: SmtpSink) -> None:
        message = b"Subject: =?utf-8?q?Ol=C3=A1?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCorpo\r\n"
        for recipient in ("ana@example.com", "bruno@example.com", "ana@example.com"):
            await aiosmtplib.send(
                message, sender="n@example.org", recipients=[recipient], hostname="127.0.0.1", port=sink.port
            )

        assert sink.count_by_recipient() == {"ana@example.com": 2, "bruno@example.com": 1}
        first = sink.received()[0]
        assert (first.envelope_from, first.message["Subject"], first.body("plain").strip()) == (
            "n@example.org",
            "Olá",
            "Corpo",
        )


class TestWebApp:
    async def test_lists_messages_with_the_date_in_sao_paulo_time(self, sink: SmtpSink) -> None:
        await aiosmtplib.send(
            b"Subject: Oi\r\n\r\nx\r\n",
            sender="n@example.org",
            recipients=["d@example.com"],
            hostname="127.0.0.1",
            port=sink.port,
        )
        received_at = sink.received()[0].received_at.astimezone(UTC)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web_app(sink)), base_url="http://t"
        ) as client:
            page = (await client.get("/")).text
            listed = (await client.get("/messages")).json()

        local = received_at.replace(tzinfo=UTC).timestamp() - 3 * 3600  # Brazil has no DST since 2019
        assert datetime.fromtimestamp(local, UTC).strftime("%d/%m/%Y %H:%M:%S") in page
        assert [(m["to"], m["subject"]) for m in listed] == [(["d@example.com"], "Oi")]
