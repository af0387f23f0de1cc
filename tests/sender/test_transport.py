"""The transports against real servers: SMTP over TCP to a local aiosmtpd, SES on moto's server."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import aioboto3
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from botocore.exceptions import (
    BotoCoreError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto.server import ThreadedMotoServer

from devtools.smtp_sink import SmtpSink, free_port
from services.sender.limits import ProviderLimits
from services.sender.transport import (
    AccountRefusedError,
    IndeterminateSendError,
    OutgoingMail,
    PermanentSendError,
    SendError,
    SesTransport,
    SmtpStage,
    SmtpTransport,
    ThrottledError,
    TransientSendError,
    classify_ses_error,
    classify_smtp_reply,
)
from shared.contracts import SesConnection, SmtpConnection

SMTP_TIMEOUT = 5.0
AWS_REGION = "us-east-1"


def a_mail(to: str, sender: str = "news@mailer.example") -> OutgoingMail:
    """A small message; transports carry bytes, whatever renders them."""
    message = EmailMessage(policy=policy.SMTP)
    message["From"], message["To"], message["Subject"] = sender, to, "Novidades"
    message["Message-ID"] = make_msgid(domain="mailer.example")
    message.set_content("Olá!\n.a line that starts with a dot\n")
    return OutgoingMail(
        envelope_from=sender, recipient=to, data=message.as_bytes(), message_id=message["Message-ID"]
    )


def connection(server: SMTP) -> asyncio.BaseTransport:
    """The server's side of the client's connection."""
    assert server.transport is not None
    return server.transport


@dataclass
class RefusingSink(SmtpSink):
    """The sink, refusing recipients "hard…" (550) and "soft…" (451) and senders "blocked…" (451),
    answering scripted replies, dropping connections on request, and noting each message's
    connection and raw bytes, each QUIT and how many messages were in DATA at once."""

    peers: list[Any] = field(default_factory=list)
    # the connection of each MAIL FROM, accepted or not
    transactions: list[Any] = field(default_factory=list)
    # per message: (was its connection encrypted, was it logged in)
    encrypted_logins: list[tuple[bool, bool]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    quits: int = 0
    # recipient -> the reply to its RCPT or to its DATA, instead of accepting.
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)
    # recipient -> how many times to drop the connection at its RCPT, or after its message's dot.
    drops_at_rcpt: Counter[str] = field(default_factory=Counter)
    drops_after_data: Counter[str] = field(default_factory=Counter)
    data_seconds: float = 0.0
    in_data: int = 0
    most_in_data: int = 0
    controller_options: dict[str, Any] = field(default_factory=dict)

    def start(self) -> RefusingSink:
        """Listen, with the TLS and AUTH options of `controller_options`."""
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **self.controller_options)
        self._controller.start()
        return self

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        self.transactions.append(session.peer)
        if address.startswith("blocked"):
            return "451 4.3.0 sender temporarily refused"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.drops_at_rcpt[address] > 0:
            self.drops_at_rcpt[address] -= 1
            connection(server).close()
            return "250 OK"
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        if address.startswith("hard"):
            return "550 5.1.1 user unknown"
        if address.startswith("soft"):
            return "451 4.7.1 try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_data += 1
        self.most_in_data = max(self.most_in_data, self.in_data)
        try:
            await asyncio.sleep(self.data_seconds)
        finally:
            self.in_data -= 1
        [recipient] = envelope.rcpt_tos
        if recipient in self.data_replies:
            return self.data_replies[recipient]
        self.peers.append(session.peer)
        self.encrypted_logins.append(
            (connection(server).get_extra_info("ssl_object") is not None, bool(session.authenticated))
        )
        self.raw.append(bytes(envelope.original_content or b""))
        accepted = await super().handle_DATA(server, session, envelope)
        if self.drops_after_data[recipient] > 0:
            self.drops_after_data[recipient] -= 1
            connection(server).close()
        return accepted

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"


def smtp_transport(port: int, pool_size: int = 3) -> SmtpTransport:
    return SmtpTransport(
        SmtpConnection(host="127.0.0.1", port=port, security="none"), None, SMTP_TIMEOUT, pool_size
    )


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

    async def test_a_connection_the_server_dropped_while_idle_is_replaced_without_failing(
        self, sink: RefusingSink
    ) -> None:
        smtp = smtp_transport(sink.port)
        try:
            await smtp.send(a_mail("ana@example.com"))
            sink.stop()
            restarted = RefusingSink(port=sink.port).start()
            try:
                mail = a_mail("bruno@example.net")

                assert await smtp.send(mail) == mail.message_id

                assert restarted.count_by_recipient() == {"bruno@example.net": 1}
            finally:
                restarted.stop()
        finally:
            await smtp.close()


class TestSmtpTransportPool:
    async def test_sends_concurrently_over_at_most_pool_size_connections(self, sink: RefusingSink) -> None:
        sink.data_seconds = 0.05
        smtp = smtp_transport(sink.port, pool_size=3)
        recipients = [f"r{n}@example.com" for n in range(12)]
        try:
            await asyncio.gather(*(smtp.send(a_mail(to)) for to in recipients))
        finally:
            await smtp.close()

        assert sink.count_by_recipient() == dict.fromkeys(recipients, 1)
        assert len(set(sink.peers)) == 3
        assert sink.most_in_data == 3
        assert sink.quits == 3

    async def test_a_pool_of_one_sends_one_message_at_a_time(self, sink: RefusingSink) -> None:
        sink.data_seconds = 0.02
        smtp = smtp_transport(sink.port, pool_size=1)
        try:
            await asyncio.gather(*(smtp.send(a_mail(f"r{n}@example.com")) for n in range(4)))
        finally:
            await smtp.close()

        assert len(sink.received()) == 4
        assert len(set(sink.peers)) == 1
        assert sink.most_in_data == 1

    def test_rejects_an_empty_pool(self) -> None:
        with pytest.raises(ValueError, match="pool_size"):
            smtp_transport(25, pool_size=0)

    async def test_a_connection_lost_before_data_is_replaced_and_the_message_sent_once(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        await transport.send(a_mail("ana@example.com"))
        sink.drops_at_rcpt["bruno@example.net"] = 1
        mail = a_mail("bruno@example.net")

        assert await transport.send(mail) == mail.message_id

        assert sink.count_by_recipient() == {"ana@example.com": 1, "bruno@example.net": 1}
        assert sink.peers[0] != sink.peers[1]

    async def test_a_connection_lost_twice_before_data_is_transient(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        sink.drops_at_rcpt["ana@example.com"] = 2

        with pytest.raises(TransientSendError, match="connection problem") as lost:
            await transport.send(a_mail("ana@example.com"))

        assert not isinstance(lost.value, ThrottledError)
        assert sink.received() == []

    async def test_a_connection_lost_after_the_message_is_indeterminate_and_not_resent(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        sink.drops_after_data["ana@example.com"] = 1

        with pytest.raises(IndeterminateSendError, match="during DATA"):
            await transport.send(a_mail("ana@example.com"))

        assert sink.count_by_recipient() == {"ana@example.com": 1}
        await transport.send(a_mail("bruno@example.net"))
        assert sink.count_by_recipient() == {"ana@example.com": 1, "bruno@example.net": 1}


class TestSmtpTransportReplies:
    @pytest.mark.parametrize(
        ("rcpt_reply", "data_reply", "error", "daily"),
        [
            ("550 5.1.1 user unknown", None, PermanentSendError, None),
            ("450 4.2.0 mailbox busy", None, TransientSendError, None),
            (None, "550 5.7.1 message content rejected", PermanentSendError, None),
            (None, "454 Throttling failure: Maximum sending rate exceeded", ThrottledError, False),
            (None, "454 Throttling failure: Daily message quota exceeded", ThrottledError, True),
            (None, "421 4.7.0 Too many concurrent connections", ThrottledError, False),
            (
                None,
                "554 Access denied: User is not authorized to perform ses:SendRawEmail",
                AccountRefusedError,
                None,
            ),
            (None, "554 Message rejected: Email address is not verified.", AccountRefusedError, None),
            (None, "554 5.7.1 Sending paused for this account", AccountRefusedError, None),
        ],
    )
    async def test_each_reply_becomes_its_error_with_the_reply_as_reason(
        self,
        transport: SmtpTransport,
        sink: RefusingSink,
        rcpt_reply: str | None,
        data_reply: str | None,
        error: type[SendError],
        daily: bool | None,
    ) -> None:
        if rcpt_reply:
            sink.rcpt_replies["ana@example.com"] = rcpt_reply
        if data_reply:
            sink.data_replies["ana@example.com"] = data_reply

        with pytest.raises(SendError) as refused:
            await transport.send(a_mail("ana@example.com"))

        assert type(refused.value) is error
        assert refused.value.reason == (rcpt_reply or data_reply)
        if daily is not None:
            assert isinstance(refused.value, ThrottledError)
            assert refused.value.daily_quota_exceeded is daily
        mail = a_mail("bruno@example.net")
        assert await transport.send(mail) == mail.message_id


class TestClassifySmtpReply:
    @pytest.mark.parametrize(
        ("code", "text", "stage", "error"),
        [
            (550, "5.1.1 user unknown", "rcpt", PermanentSendError),
            (552, "5.3.4 message too big", "data", PermanentSendError),
            (451, "4.7.1 try later", "rcpt", TransientSendError),
            (454, "Temporary authentication failure", "connect", TransientSendError),
            (454, "Throttling failure: Maximum sending rate exceeded", "data", ThrottledError),
            (421, "4.3.2 service shutting down", "mail", ThrottledError),
            (421, "Too many connections", "connect", ThrottledError),
            (451, "4.7.1 rate limit exceeded, slow down", "rcpt", ThrottledError),
            (530, "Authentication required", "mail", AccountRefusedError),
            (534, "5.7.9 please log in with a stronger mechanism", "connect", AccountRefusedError),
            (535, "Authentication Credentials Invalid", "connect", AccountRefusedError),
            (535, "Account not subscribed to SES", "connect", AccountRefusedError),
            (553, "5.7.1 sender address rejected", "mail", AccountRefusedError),
            (554, "no SMTP service here", "connect", AccountRefusedError),
            (554, "Account is under probation", "data", AccountRefusedError),
            (550, "5.7.1 Relay access denied", "rcpt", AccountRefusedError),
        ],
    )
    def test_classifies_by_code_text_and_stage(
        self, code: int, text: str, stage: SmtpStage, error: type[SendError]
    ) -> None:
        classified = classify_smtp_reply(code, text, stage)

        assert type(classified) is error
        assert classified.reason == f"{code} {text}"

    def test_only_the_daily_quota_says_so(self) -> None:
        daily = classify_smtp_reply(454, "Throttling failure: Daily message quota exceeded", "data")
        rate = classify_smtp_reply(454, "Throttling failure: Maximum sending rate exceeded", "data")

        assert isinstance(daily, ThrottledError) and daily.daily_quota_exceeded
        assert isinstance(rate, ThrottledError) and not rate.daily_quota_exceeded


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (certificate, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A server context with a self-signed certificate and a client context that trusts it."""
    cert_file, key_file = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return Tls(server, ssl.create_default_context(cafile=str(cert_file)))


@dataclass
class Logins:
    """aiosmtpd's authenticator: one user, noting each mechanism used."""

    mechanisms: list[str] = field(default_factory=list)

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.mechanisms.append(mechanism)
        valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            b"user",
            b"secret",
        )
        return AuthResult(success=valid, handled=False)


def secure_sink(tls: Tls, security: str, logins: Logins, **options: Any) -> RefusingSink:
    """A sink that speaks TLS from the start ("tls") or after STARTTLS, and needs a login."""
    if security == "tls":
        # aiosmtpd sees only STARTTLS as TLS; with implicit TLS the whole session is encrypted.
        options |= {"ssl_context": tls.server, "auth_require_tls": False}
    else:
        options |= {"tls_context": tls.server, "require_starttls": True}
    return RefusingSink(controller_options={"authenticator": logins, "auth_required": True} | options).start()


def secure_transport(
    port: int,
    security: Literal["starttls", "tls"],
    tls: Tls,
    password: str = "secret",
    *,
    trusted: bool = True,
) -> SmtpTransport:
    connection = SmtpConnection(host="127.0.0.1", port=port, security=security, username="user")
    return SmtpTransport(connection, password, SMTP_TIMEOUT, tls_context=tls.client if trusted else None)


# aiosmtpd warns about AUTH without STARTTLS; with implicit TLS the whole session is encrypted.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
class TestSmtpTransportSecurity:
    @pytest.mark.parametrize("security", ["starttls", "tls"])
    @pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
    async def test_sends_encrypted_after_logging_in(
        self, tls: Tls, security: Literal["starttls", "tls"], mechanism: str
    ) -> None:
        logins = Logins()
        other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
        sink = secure_sink(tls, security, logins, auth_exclude_mechanism=[other, "CRAM-MD5"])
        smtp = secure_transport(sink.port, security, tls)
        try:
            await smtp.send(a_mail("ana@example.com"))
            await smtp.send(a_mail("bruno@example.net"))
        finally:
            await smtp.close()
            sink.stop()

        assert sink.count_by_recipient() == {"ana@example.com": 1, "bruno@example.net": 1}
        assert logins.mechanisms == [mechanism]
        assert sink.encrypted_logins == [(True, True), (True, True)]

    @pytest.mark.parametrize("security", ["starttls", "tls"])
    async def test_a_wrong_password_refuses_the_account(
        self, tls: Tls, security: Literal["starttls", "tls"]
    ) -> None:
        sink = secure_sink(tls, security, Logins())
        smtp = secure_transport(sink.port, security, tls, password="wrong")
        try:
            with pytest.raises(AccountRefusedError, match=r"^535"):
                await smtp.send(a_mail("ana@example.com"))
        finally:
            await smtp.close()
            sink.stop()

        assert sink.received() == []

    @pytest.mark.parametrize("security", ["starttls", "tls"])
    async def test_an_untrusted_certificate_refuses_the_account(
        self, tls: Tls, security: Literal["starttls", "tls"]
    ) -> None:
        sink = secure_sink(tls, security, Logins())
        smtp = secure_transport(sink.port, security, tls, trusted=False)
        try:
            with pytest.raises(AccountRefusedError, match="certificate"):
                await smtp.send(a_mail("ana@example.com"))
        finally:
            await smtp.close()
            sink.stop()

        assert sink.received() == []

    async def test_a_server_that_needs_a_login_refuses_an_account_without_one(self, tls: Tls) -> None:
        sink = secure_sink(tls, "starttls", Logins())
        connection = SmtpConnection(host="127.0.0.1", port=sink.port, security="starttls")
        smtp = SmtpTransport(connection, None, SMTP_TIMEOUT, tls_context=tls.client)
        try:
            with pytest.raises(AccountRefusedError, match=r"^530"):
                await smtp.send(a_mail("ana@example.com"))
        finally:
            await smtp.close()
            sink.stop()


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

    async def test_a_connection_busy_during_close_is_quit_when_its_send_ends(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        sink.data_seconds = 0.2
        sending = asyncio.ensure_future(transport.send(a_mail("ana@example.com")))
        await asyncio.sleep(0.1)

        await transport.close()
        assert sink.quits == 0
        await sending

        assert sink.quits == 1
        assert sink.count_by_recipient() == {"ana@example.com": 1}

    async def test_a_send_cancelled_mid_transaction_leaves_no_connection_in_the_pool(
        self, transport: SmtpTransport, sink: RefusingSink
    ) -> None:
        sink.data_seconds = 0.2
        sending = asyncio.ensure_future(transport.send(a_mail("ana@example.com")))
        await asyncio.sleep(0.1)

        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending

        await transport.send(a_mail("bruno@example.net"))
        await transport.close()

        # bruno's message went on a new connection, the only one left to say QUIT on.
        assert len(sink.transactions) == 2
        assert sink.transactions[0] != sink.transactions[1]
        assert sink.quits == 1

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

    async def test_an_unverified_sender_refuses_the_account(
        self, ses_transport: SesTransport, aws_url: str
    ) -> None:
        with pytest.raises(AccountRefusedError) as refused:
            await ses_transport.send(a_mail("ana@example.com", sender="news@unverified.example"))

        assert refused.value.reason.startswith("MessageRejected: ")
        assert "news@unverified.example" in refused.value.reason
        assert raw_messages(aws_url) == []

    async def test_a_message_ses_rejects_is_permanent(
        self, ses: Any, ses_transport: SesTransport, aws_url: str
    ) -> None:
        await ses.verify_email_identity(EmailAddress="news@mailer.example")
        crowded = a_mail("ana@example.com")
        # moto adds the To header's addresses to the destinations and refuses more than 50.
        headers = f"From: news@mailer.example\r\nTo: {', '.join(f'r{n}@example.com' for n in range(51))}\r\n"
        crowded = OutgoingMail(
            crowded.envelope_from, crowded.recipient, headers.encode() + b"\r\nOla\r\n", "x"
        )

        with pytest.raises(PermanentSendError) as refused:
            await ses_transport.send(crowded)

        assert type(refused.value) is PermanentSendError
        assert refused.value.reason == "MessageRejected: Too many recipients."

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


class TestSesTransportProviderLimits:
    async def test_reads_the_send_quota(self, ses: Any, ses_transport: SesTransport) -> None:
        await ses.verify_email_identity(EmailAddress="news@mailer.example")
        await ses_transport.send(a_mail("ana@example.com"))

        limits = await ses_transport.provider_limits()

        # moto's quota is fixed (the sandbox's 200 a day at 1/s); only SentLast24Hours moves, and it
        # counts our destination and the To header's same address as two.
        assert limits == ProviderLimits(max_send_rate=1.0, max_24_hour_send=200, sent_last_24_hours=2)

    async def test_an_unlimited_quota_has_no_24_hour_limit(self) -> None:
        with SesDouble(
            200,
            "<GetSendQuotaResponse><GetSendQuotaResult><Max24HourSend>-1.0</Max24HourSend>"
            "<MaxSendRate>14.0</MaxSendRate><SentLast24Hours>3.0</SentLast24Hours>"
            "</GetSendQuotaResult></GetSendQuotaResponse>",
        ) as double:
            transport = SesTransport(ses_connection(double.url), "testing")
            try:
                limits = await transport.provider_limits()
            finally:
                await transport.close()

        assert limits == ProviderLimits(max_send_rate=14.0, max_24_hour_send=None, sent_last_24_hours=3)

    async def test_an_unreadable_quota_is_unknown(self) -> None:
        with SesDouble(
            403, ses_error("AccessDenied", "not authorized to perform ses:GetSendQuota")
        ) as double:
            transport = SesTransport(ses_connection(double.url), "testing")
            try:
                assert await transport.provider_limits() is None
            finally:
                await transport.close()

    async def test_smtp_has_no_provider_limits(self, transport: SmtpTransport) -> None:
        assert await transport.provider_limits() is None


def ses_error(code: str, message: str) -> str:
    """An SES Query API error body."""
    return (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
        "</Error><RequestId>r-1</RequestId></ErrorResponse>"
    )


class SesDouble:
    """An HTTP server answering every SES call with one canned reply, counting the calls: the
    errors moto never produces (throttling, paused account) come back over real HTTP."""

    def __init__(self, status: int, body: str) -> None:
        double = self

        class Reply(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                double.calls += 1
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                return

        self.calls = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Reply)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SesDouble:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class TestSesTransportErrors:
    @pytest.mark.parametrize(
        ("status", "code", "message", "error", "daily"),
        [
            (400, "Throttling", "Maximum sending rate exceeded.", ThrottledError, False),
            (400, "Throttling", "Daily message quota exceeded.", ThrottledError, True),
            (400, "ThrottlingException", "Rate exceeded", ThrottledError, False),
            (
                400,
                "AccountSendingPausedException",
                "Sending paused for this account.",
                AccountRefusedError,
                None,
            ),
            (
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check",
                AccountRefusedError,
                None,
            ),
            (
                403,
                "AccessDenied",
                "User is not authorized to perform ses:SendRawEmail",
                AccountRefusedError,
                None,
            ),
            (400, "MailFromDomainNotVerifiedException", "MX record not found", AccountRefusedError, None),
            (400, "MessageRejected", "Illegal address", PermanentSendError, None),
            (400, "InvalidParameterValue", "Missing final '@domain'", PermanentSendError, None),
            (500, "InternalFailure", "try again", TransientSendError, None),
        ],
    )
    async def test_each_ses_error_is_sent_once_and_becomes_its_error(
        self, status: int, code: str, message: str, error: type[SendError], daily: bool | None
    ) -> None:
        with SesDouble(status, ses_error(code, message)) as double:
            transport = SesTransport(ses_connection(double.url), "testing")
            try:
                with pytest.raises(SendError) as refused:
                    await transport.send(a_mail("ana@example.com"))
            finally:
                await transport.close()

        assert type(refused.value) is error
        assert refused.value.reason == f"{code}: {message}"
        if daily is not None:
            assert isinstance(refused.value, ThrottledError)
            assert refused.value.daily_quota_exceeded is daily
        # botocore would retry throttles and 500s by itself, hiding them from the pace.
        assert double.calls == 1

    @pytest.mark.parametrize(
        ("exc", "error"),
        [
            (EndpointConnectionError(endpoint_url="http://ses"), TransientSendError),
            (ConnectTimeoutError(endpoint_url="http://ses"), TransientSendError),
            (ReadTimeoutError(endpoint_url="http://ses"), IndeterminateSendError),
            (ConnectionClosedError(endpoint_url="http://ses"), IndeterminateSendError),
            (NoCredentialsError(), TransientSendError),
        ],
    )
    def test_a_failed_call_is_indeterminate_only_once_ses_may_have_the_message(
        self, exc: BotoCoreError, error: type[SendError]
    ) -> None:
        assert type(classify_ses_error(exc)) is error
