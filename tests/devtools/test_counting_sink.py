"""The counting SMTP sink: what it records, in-process and as its own process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from devtools.counting_sink import DROP, AcceptAll, Arrival, CountingSink, Reply, SinkProcess, reply

MESSAGE = b"From: n@example.org\r\nX-Mailer-Campaign: 42\r\nSubject: Oi\r\n\r\nCorpo\r\n"


@pytest.fixture
def counting_sink() -> Iterator[CountingSink]:
    with CountingSink(keep_data=True) as sink:
        yield sink


async def _send(port: int, message: bytes, recipients: list[str], sender: str = "n@example.org") -> None:
    await aiosmtplib.send(message, sender=sender, recipients=recipients, hostname="127.0.0.1", port=port)


class TestCountingSink:
    async def test_records_envelope_campaign_size_and_arrival_time(self, counting_sink: CountingSink) -> None:
        before = time.time()
        await _send(counting_sink.port, MESSAGE, ["ana@example.com", "bruno@example.com"])

        [arrival] = counting_sink.arrivals()
        assert (arrival.sender, arrival.recipients, arrival.campaign) == (
            "n@example.org",
            ("ana@example.com", "bruno@example.com"),
            "42",
        )
        assert arrival.data == MESSAGE
        assert arrival.size == len(MESSAGE)
        assert before <= arrival.at <= time.time()

    async def test_undoes_dot_stuffing(self, counting_sink: CountingSink) -> None:
        # aiosmtplib doubles the leading dots on the wire; the sink must give back the original.
        message = b"Subject: pontos\r\n\r\n.linha com ponto\r\n..dois\r\n.\r\nfim\r\n"
        await _send(counting_sink.port, message, ["ana@example.com"])

        [arrival] = counting_sink.arrivals()
        assert arrival.data == message
        assert arrival.campaign is None

    async def test_an_empty_message_is_accepted(self, counting_sink: CountingSink) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=counting_sink.port) as client:
            await client.mail("n@example.org")
            await client.rcpt("ana@example.com")
            code, _ = await client.execute_command(b"DATA")
            assert code == 354
            code, _ = await client.execute_command(b".")
            assert code == 250

        assert [a.data for a in counting_sink.arrivals()] == [b""]

    async def test_counts_messages_of_many_connections_in_arrival_order(
        self, counting_sink: CountingSink
    ) -> None:
        async def connection(number: int) -> None:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=counting_sink.port) as client:
                for i in range(20):
                    await client.sendmail("n@example.org", [f"c{number}-{i}@example.com"], MESSAGE)

        await asyncio.gather(*(connection(n) for n in range(5)))

        arrivals = counting_sink.arrivals()
        assert counting_sink.count() == 100
        assert {r for a in arrivals for r in a.recipients} == {
            f"c{n}-{i}@example.com" for n in range(5) for i in range(20)
        }
        assert [a.at for a in arrivals] == sorted(a.at for a in arrivals)

    async def test_rset_forgets_the_envelope(self, counting_sink: CountingSink) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=counting_sink.port) as client:
            await client.mail("first@example.org")
            await client.rcpt("lost@example.com")
            await client.rset()
            code, _ = await client.execute_command(b"DATA")
            assert code == 503
            await client.noop()
            await client.sendmail("second@example.org", ["kept@example.com"], MESSAGE)

        assert [(a.sender, a.recipients) for a in counting_sink.arrivals()] == [
            ("second@example.org", ("kept@example.com",))
        ]

    async def test_pipelined_commands_get_their_replies_in_order(self, counting_sink: CountingSink) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", counting_sink.port)
        writer.write(
            b"EHLO x\r\nMAIL FROM:<a@example.org> SIZE=10\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
            b"Subject: p\r\n\r\n..x\r\n.\r\nNOOP\r\nQUIT\r\n"
        )
        replies = (await reader.read()).decode().splitlines()
        writer.close()

        assert [line[:3] for line in replies if line[3] == " "] == [
            "220",
            "250",
            "250",
            "250",
            "354",
            "250",
            "250",
            "221",
        ]
        [arrival] = counting_sink.arrivals()
        assert arrival.data == b"Subject: p\r\n\r\n.x\r\n"

    async def test_a_responder_decides_the_replies(self) -> None:
        class RefuseOne(AcceptAll):
            def rcpt(self, sender: str, recipient: str) -> Reply:
                return (
                    reply(550, "5.1.1 No such user")
                    if recipient.startswith("no")
                    else super().rcpt(sender, recipient)
                )

            def data(self, arrival: Arrival) -> Reply:
                return DROP if "drop@example.com" in arrival.recipients else super().data(arrival)

        with CountingSink(responder=RefuseOne()) as sink:
            refused = await aiosmtplib.send(
                MESSAGE, sender="n@example.org", recipients=["no@example.com", "yes@example.com"],
                hostname="127.0.0.1", port=sink.port,
            )  # fmt: skip
            with pytest.raises(aiosmtplib.SMTPException):
                await _send(sink.port, MESSAGE, ["drop@example.com"])

            assert list(refused[0]) == ["no@example.com"]
            assert [a.recipients for a in sink.arrivals()] == [("yes@example.com",)]


class TestSinkProcess:
    async def test_reports_arrivals_as_they_come_and_exits_on_sigterm(self, tmp_path: Path) -> None:
        sink = SinkProcess(tmp_path / "arrivals.jsonl").start()
        try:
            await _send(sink.port, MESSAGE, ["ana@example.com"])
            assert sink.count() == 1
            await _send(sink.port, MESSAGE, ["bruno@example.com"], sender="m@example.org")
            arrivals = sink.arrivals()
        finally:
            sink.stop()

        assert sink.process is not None and sink.process.returncode == 0
        assert [(a.sender, a.recipients, a.campaign, a.size) for a in arrivals] == [
            ("n@example.org", ("ana@example.com",), "42", len(MESSAGE)),
            ("m@example.org", ("bruno@example.com",), "42", len(MESSAGE)),
        ]
