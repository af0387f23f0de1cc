"""The transports against real servers: SMTP over TCP to a local aiosmtpd, SES on moto's server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any

import aioboto3
import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from moto.server import ThreadedMotoServer

from devtools.smtp_sink import SmtpSink, free_port
from services.sender.message import CompiledCampaign, build
from services.sender.transport import (
    OutgoingMail,
    PermanentSendError,
    SesTransport,
    SmtpTransport,
    TransientSendError,
)
from shared.contracts import SesConnection, SmtpConnection
from shared.links import LinkSigner, TrackingLinks
from tests.sender.examples import a_campaign, a_recipient

SMTP_TIMEOUT = 5.0
AWS_REGION = "us-east-1"


def a_mail(to: str, sender: str = "news@mailer.example") -> OutgoingMail:
    campaign = CompiledCampaign.of(a_campaign(1))
    mail = build(campaign, a_recipient(email=to), TrackingLinks("https://t.example", LinkSigner("k")))
    return OutgoingMail(
        envelope_from=sender, recipient=mail.recipient, data=mail.data, message_id=mail.message_id
    )


@dataclass
class RefusingSink(SmtpSink):
    """The sink, refusing recipients "hard…" (550) and "soft…" (451) and senders "blocked…" (451),
    and noting each message's connection and raw bytes and each QUIT."""

    peers: list[Any] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    quits: int = 0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if address.startswith("blocked"):
            return "451 4.3.0 sender temporarily refused"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.startswith("hard"):
            return "550 5.1.1 user unknown"
        if address.startswith("soft"):
            return "451 4.7.1 try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.peers.append(session.peer)
        self.raw.append(bytes(envelope.original_content or b""))
        return await super().handle_DATA(server, session, envelope)

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"


def smtp_transport(port: int) -> SmtpTransport:
    return SmtpTransport(SmtpConnection(host="127.0.0.1", port=port, security="none"), None, SMTP_TIMEOUT)


@pytest.fixture
def sink() -> Iterator[RefusingSink]:
    server = RefusingSink()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def transport(sink: RefusingSink) -> AsyncIterator[SmtpTransport]:
    smtp = smtp_transport(sink.port)
    yield smtp
    await smtp.close()


class TestSmtpTransportSend:
    async def test_returns_the_message_id_and_the_server_gets_the_message(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        mail = a_mail("ana@example.com")

        provider_id = await transport.send(mail)

        assert provider_id == mail.message_id
        [received] = sink.received()
        assert (received.envelope_from, received.recipients) == ("news@mailer.example", ("ana@example.com",))
        assert received.message["Message-ID"].strip() == mail.message_id
        assert sink.raw == [mail.data]

    async def test_reuses_one_connection_for_several_sends(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        await transport.send(a_mail("ana@example.com"))
        await transport.send(a_mail("bruno@example.net"))

        assert sink.count_by_recipient() == {"ana@example.com": 1, "bruno@example.net": 1}
        assert len(sink.peers) == 2
        assert sink.peers[0] == sink.peers[1]

    async def test_a_5xx_refusal_is_permanent_with_the_servers_reply(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        with pytest.raises(PermanentSendError) as refused:
            await transport.send(a_mail("hard.bounce@example.com"))

        assert refused.value.reason == "550 5.1.1 user unknown"
        assert sink.received() == []

    async def test_a_4xx_refusal_is_transient_with_the_servers_reply(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        with pytest.raises(TransientSendError) as refused:
            await transport.send(a_mail("soft.bounce@example.com"))

        assert refused.value.reason == "451 4.7.1 try later"
        assert sink.received() == []

    async def test_a_4xx_refusal_of_the_sender_is_transient(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        with pytest.raises(TransientSendError) as refused:
            await transport.send(a_mail("ana@example.com", sender="blocked@mailer.example"))

        assert refused.value.reason.startswith("451 4.3.0")

    @pytest.mark.parametrize("refused", ["hard.bounce@example.com", "soft.bounce@example.com"])
    async def test_the_next_message_goes_after_a_refusal(
        self, transport: SmtpTransport, sink: RefusingSink, refused: str
    ) -> None:
        with pytest.raises((PermanentSendError, TransientSendError)):
            await transport.send(a_mail(refused))

        mail = a_mail("ana@example.com")
        assert await transport.send(mail) == mail.message_id
        assert sink.count_by_recipient() == {"ana@example.com": 1}

    async def test_a_server_that_is_not_listening_is_transient(self) -> None:
        smtp = smtp_transport(free_port())
        try:
            with pytest.raises(TransientSendError, match="connection problem"):
                await smtp.send(a_mail("ana@example.com"))
        finally:
            await smtp.close()

    async def test_connects_once_the_server_listens(self) -> None:
        port = free_port()
        smtp = smtp_transport(port)
        try:
            with pytest.raises(TransientSendError):
                await smtp.send(a_mail("ana@example.com"))
            server = RefusingSink(port=port)
            server.start()
            try:
                await smtp.send(a_mail("ana@example.com"))
                assert server.count_by_recipient() == {"ana@example.com": 1}
            finally:
                server.stop()
        finally:
            await smtp.close()

    async def test_a_dropped_connection_costs_at_most_one_transient_failure(self, sink: RefusingSink) -> None:
        smtp = smtp_transport(sink.port)
        try:
            await smtp.send(a_mail("ana@example.com"))
            sink.stop()
            restarted = RefusingSink(port=sink.port)
            restarted.start()
            try:
                mail = a_mail("bruno@example.net")
                outcomes: list[str] = []
                for _ in range(2):
                    try:
                        outcomes.append(await smtp.send(mail))
                        break
                    except TransientSendError:
                        outcomes.append("transient")
                assert outcomes[-1] == mail.message_id, outcomes
                assert restarted.count_by_recipient() == {"bruno@example.net": 1}
            finally:
                restarted.stop()
        finally:
            await smtp.close()


class TestSmtpTransportClose:
    async def test_says_quit_to_the_server(self, transport: SmtpTransport, sink: RefusingSink) -> None:
        await transport.send(a_mail("ana@example.com"))

        await transport.close()

        assert sink.quits == 1

    async def test_a_closed_transport_connects_again_to_send(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        await transport.send(a_mail("ana@example.com"))
        await transport.close()

        await transport.send(a_mail("bruno@example.net"))

        assert sink.count_by_recipient() == {"ana@example.com": 1, "bruno@example.net": 1}
        assert sink.peers[0] != sink.peers[1]

    async def test_closing_an_unused_transport_says_nothing(self, sink: RefusingSink) -> None:
        await smtp_transport(sink.port).close()

        assert sink.quits == 0


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's AWS server on a free port, for the whole module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_url(moto_server: str) -> str:
    """The moto server, emptied of what earlier tests did."""
    httpx.post(f"{moto_server}/moto-api/reset").raise_for_status()
    return moto_server


def ses_connection(endpoint_url: str) -> SesConnection:
    return SesConnection(
        region=AWS_REGION,
        access_key_id="testing",
        secret_access_key_encrypted="not read by the transport",
        endpoint_url=endpoint_url,
    )


@pytest.fixture
async def ses(aws_url: str) -> AsyncIterator[Any]:
    """An SES client of our own, to set moto up and read its state."""
    session = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=AWS_REGION
    )
    async with session.client("ses", endpoint_url=aws_url) as client:
        yield client


@pytest.fixture
async def ses_transport(aws_url: str) -> AsyncIterator[SesTransport]:
    transport = SesTransport(ses_connection(aws_url), "testing")
    yield transport
    await transport.close()


def raw_messages(aws_url: str) -> list[dict[str, Any]]:
    """What moto recorded as sent with SendRawEmail."""
    state = httpx.get(f"{aws_url}/moto-api/data.json").json()
    messages: list[dict[str, Any]] = state["ses"]["RawMessage"]
    return messages


class TestSesTransportSend:
    async def test_returns_the_ses_message_id_of_the_raw_message(
        self, ses: Any, ses_transport: SesTransport, aws_url: str
    ) -> None:
        await ses.verify_email_identity(EmailAddress="news@mailer.example")
        mail = a_mail("ana@example.com")

        provider_id = await ses_transport.send(mail)

        [recorded] = raw_messages(aws_url)
        assert provider_id == recorded["id"]
        assert provider_id != mail.message_id
        assert recorded["source"] == "news@mailer.example"
        # moto adds the To header's addresses to the destinations; ours comes first.
        assert recorded["destinations"][0] == "ana@example.com"
        sent = message_from_bytes(recorded["raw_data"].encode(), policy=policy.default)
        assert sent["Message-ID"].strip() == mail.message_id
        assert (await ses.get_send_quota())["SentLast24Hours"] > 0

    async def test_a_verified_domain_lets_any_of_its_addresses_send(
        self, ses: Any, ses_transport: SesTransport, aws_url: str
    ) -> None:
        await ses.verify_domain_identity(Domain="mailer.example")

        await ses_transport.send(a_mail("ana@example.com", sender="avisos@mailer.example"))
        await ses_transport.send(a_mail("bruno@example.net", sender="news@mailer.example"))

        recorded = raw_messages(aws_url)
        assert [(m["source"], m["destinations"][0]) for m in recorded] == [
            ("avisos@mailer.example", "ana@example.com"),
            ("news@mailer.example", "bruno@example.net"),
        ]

    async def test_an_unverified_sender_is_permanent(self, ses_transport: SesTransport, aws_url: str) -> None:
        with pytest.raises(PermanentSendError) as refused:
            await ses_transport.send(a_mail("ana@example.com", sender="news@unverified.example"))

        assert refused.value.reason.startswith("MessageRejected: ")
        assert "news@unverified.example" in refused.value.reason
        assert raw_messages(aws_url) == []

    async def test_an_unreachable_endpoint_is_transient(self) -> None:
        transport = SesTransport(ses_connection(f"http://127.0.0.1:{free_port()}"), "testing")
        try:
            with pytest.raises(TransientSendError, match="Could not connect"):
                await transport.send(a_mail("ana@example.com"))
        finally:
            await transport.close()

    async def test_sends_again_after_close(self, ses: Any, ses_transport: SesTransport, aws_url: str) -> None:
        await ses.verify_email_identity(EmailAddress="news@mailer.example")
        await ses_transport.send(a_mail("ana@example.com"))

        await ses_transport.close()
        await ses_transport.send(a_mail("bruno@example.net"))

        assert len(raw_messages(aws_url)) == 2
