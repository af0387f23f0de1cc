"""The accounts a sender serves: their transports, and one consumer per active account on the real vhost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography.fernet import Fernet
from faststream.rabbit import RabbitBroker

from devtools.smtp_sink import free_port
from services.sender.accounts import SendingAccounts, transport_factory
from services.sender.message import CompiledCampaign, build
from services.sender.transport import SesTransport, SmtpTransport
from shared.contracts import AccountConfigured, SendBatch, SesConnection, SmtpConnection, topology
from shared.crypto import InvalidToken, SecretBox
from shared.errors import RetryLater
from shared.links import LinkSigner, TrackingLinks
from tests.sender.conftest import Queues
from tests.sender.examples import a_batch, a_campaign, a_recipient, an_account, unique_id
from tests.sender.fakes import RecordingTransports
from tests.support import eventually

BOX = SecretBox(Fernet.generate_key().decode())
OTHER_BOX = SecretBox(Fernet.generate_key().decode())


def smtp_account(
    port: int,
    username: str | None = None,
    password_encrypted: str | None = None,
    account_id: int | None = None,
) -> AccountConfigured:
    return AccountConfigured(
        account_id=account_id or unique_id(),
        name="SMTP",
        transport="smtp",
        smtp=SmtpConnection(
            host="127.0.0.1",
            port=port,
            security="none",
            username=username,
            password_encrypted=password_encrypted,
        ),
        rate_per_second=10,
        active=True,
    )


def ses_account(secret_encrypted: str) -> AccountConfigured:
    return AccountConfigured(
        account_id=unique_id(),
        name="SES",
        transport="ses",
        ses=SesConnection(
            region="sa-east-1", access_key_id="AKIA", secret_access_key_encrypted=secret_encrypted
        ),
        rate_per_second=14,
        active=True,
    )


@dataclass
class LoginRecorder:
    """An aiosmtpd handler and authenticator: accepts mail and keeps the logins it saw."""

    logins: list[tuple[str, str]] = field(default_factory=list)
    delivered: int = 0

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.delivered += 1
        return "250 OK"


@pytest.fixture
def login_server() -> Iterator[tuple[int, LoginRecorder]]:
    """An SMTP server that offers AUTH on a plain connection (loopback only) and records logins."""
    recorder = LoginRecorder()
    port = free_port()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=port, authenticator=recorder, auth_require_tls=False
    )
    controller.start()
    yield port, recorder
    controller.stop()


class TestTransportFactory:
    async def test_an_smtp_account_logs_in_with_its_decrypted_password(
        self, login_server: tuple[int, LoginRecorder]
    ) -> None:
        port, server = login_server
        account = smtp_account(port, username="mailer", password_encrypted=BOX.encrypt("s3cret"))
        transport = transport_factory(BOX, 5.0)(account)
        assert isinstance(transport, SmtpTransport)
        mail = build(
            CompiledCampaign.of(a_campaign(1)),
            a_recipient(email="ana@example.com"),
            TrackingLinks("https://t.example", LinkSigner("k")),
        )
        try:
            await transport.send(mail)
        finally:
            await transport.close()

        assert server.logins == [("mailer", "s3cret")]
        assert server.delivered == 1

    def test_an_smtp_account_without_a_password_needs_no_key(self) -> None:
        assert isinstance(transport_factory(BOX, 5.0)(smtp_account(2525)), SmtpTransport)

    def test_an_ses_account_gets_an_ses_transport(self) -> None:
        assert isinstance(transport_factory(BOX, 5.0)(ses_account(BOX.encrypt("secret-key"))), SesTransport)

    @pytest.mark.parametrize(
        "account",
        [
            smtp_account(2525, username="mailer", password_encrypted=OTHER_BOX.encrypt("s3cret")),
            ses_account(OTHER_BOX.encrypt("secret-key")),
            ses_account("not a token"),
        ],
        ids=["smtp", "ses", "garbage"],
    )
    def test_a_secret_no_key_opens_raises(self, account: AccountConfigured) -> None:
        with pytest.raises(InvalidToken):
            transport_factory(BOX, 5.0)(account)

    def test_an_account_without_transport_settings_raises(self) -> None:
        account = an_account().model_copy(update={"smtp": None})

        with pytest.raises(ValueError, match="no transport settings"):
            transport_factory(BOX, 5.0)(account)


class Handled:
    """Keeps the batches its `handle` function (the handler given to SendingAccounts) gets."""

    def __init__(self) -> None:
        self.batches: list[SendBatch] = []

        async def handle(batch: SendBatch) -> None:
            self.batches.append(batch)

        self.handle = handle


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[RabbitBroker]:
    """A bare FastStream broker connected to the run's vhost."""
    rabbit = RabbitBroker(rabbitmq_url)
    await rabbit.start()
    await rabbit.declare_exchange(topology.SEND)
    yield rabbit
    await rabbit.stop()


@pytest.fixture
def handled() -> Handled:
    return Handled()


@pytest.fixture
async def accounts(handled: Handled, transports: RecordingTransports) -> AsyncIterator[SendingAccounts]:
    serving = SendingAccounts(handled.handle, transports, prefetch=2)
    yield serving
    await serving.close()


async def handled_batch(handled: Handled, batch: SendBatch) -> list[SendBatch]:
    """The handler's calls with this batch."""
    return [b for b in handled.batches if b.event_id == batch.event_id]


async def publish_batch(broker: RabbitBroker, batch: SendBatch) -> None:
    await broker.publish(
        batch, exchange=topology.SEND.name, routing_key=topology.account_routing_key(batch.account_id)
    )


class TestSendingAccountsGet:
    def test_an_account_not_served_means_retry_later(self, accounts: SendingAccounts) -> None:
        with pytest.raises(RetryLater, match="not active on this sender"):
            accounts.get(unique_id())


@pytest.mark.connected
class TestSendingAccountsConfigure:
    async def test_an_active_account_gets_a_consumer_transport_and_rate(
        self,
        accounts: SendingAccounts,
        broker: RabbitBroker,
        transports: RecordingTransports,
        handled: Handled,
        queues: Queues,
    ) -> None:
        config = an_account(rate_per_second=2)

        await accounts.configure(broker, config)

        served = accounts.get(config.account_id)
        assert served.config == config
        assert served.transport is transports.of(config.account_id)[0]
        assert [served.bucket.reserve(), served.bucket.reserve()] == pytest.approx([0.0, 0.5], abs=0.01)
        assert await queues.consumers(topology.account_queue(config.account_id).name) == 1
        batch = a_batch(a_campaign(config.account_id), [a_recipient()])
        await publish_batch(broker, batch)
        assert await eventually(lambda: handled_batch(handled, batch)) == [batch]

    async def test_configuring_again_replaces_consumer_and_transport(
        self,
        accounts: SendingAccounts,
        broker: RabbitBroker,
        transports: RecordingTransports,
        handled: Handled,
        queues: Queues,
    ) -> None:
        config = an_account()
        await accounts.configure(broker, config)
        changed = an_account(config.account_id, rate_per_second=5)

        await accounts.configure(broker, changed)

        old, new = transports.of(config.account_id)
        assert old.closed and not new.closed
        assert accounts.get(config.account_id).config == changed
        assert accounts.get(config.account_id).transport is new
        assert await queues.consumers(topology.account_queue(config.account_id).name) == 1
        batch = a_batch(a_campaign(config.account_id), [a_recipient()])
        await publish_batch(broker, batch)
        assert await eventually(lambda: handled_batch(handled, batch)) == [batch]

    async def test_an_inactive_account_is_not_served(
        self, accounts: SendingAccounts, broker: RabbitBroker, transports: RecordingTransports, queues: Queues
    ) -> None:
        config = an_account(active=False)

        await accounts.configure(broker, config)

        with pytest.raises(RetryLater):
            accounts.get(config.account_id)
        assert transports.of(config.account_id) == []
        assert await queues.consumers(topology.account_queue(config.account_id).name) is None

    async def test_deactivating_stops_the_consumer_and_closes_the_transport(
        self, accounts: SendingAccounts, broker: RabbitBroker, transports: RecordingTransports, queues: Queues
    ) -> None:
        config = an_account()
        await accounts.configure(broker, config)

        await accounts.configure(broker, an_account(config.account_id, active=False))

        with pytest.raises(RetryLater):
            accounts.get(config.account_id)
        [transport] = transports.of(config.account_id)
        assert transport.closed
        assert await queues.consumers(topology.account_queue(config.account_id).name) == 0

    async def test_an_account_whose_secret_cannot_be_read_is_not_served(
        self, handled: Handled, broker: RabbitBroker, queues: Queues
    ) -> None:
        serving = SendingAccounts(handled.handle, transport_factory(BOX, 5.0), prefetch=2)
        try:
            readable = smtp_account(2525, username="mailer", password_encrypted=BOX.encrypt("s3cret"))
            await serving.configure(broker, readable)
            unreadable = smtp_account(
                2525,
                username="mailer",
                password_encrypted=OTHER_BOX.encrypt("s3cret"),
                account_id=readable.account_id,
            )

            await serving.configure(broker, unreadable)

            with pytest.raises(RetryLater):
                serving.get(readable.account_id)
            assert await queues.consumers(topology.account_queue(readable.account_id).name) == 0
        finally:
            await serving.close()


@pytest.mark.connected
class TestSendingAccountsClose:
    async def test_stops_every_consumer_and_closes_every_transport(
        self, accounts: SendingAccounts, broker: RabbitBroker, transports: RecordingTransports, queues: Queues
    ) -> None:
        configs = [an_account(), an_account()]
        for config in configs:
            await accounts.configure(broker, config)

        await accounts.close()

        for config in configs:
            with pytest.raises(RetryLater):
                accounts.get(config.account_id)
            assert [t.closed for t in transports.of(config.account_id)] == [True]
            assert await queues.consumers(topology.account_queue(config.account_id).name) == 0
