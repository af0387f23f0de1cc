"""The accounts a sender serves: their transports, and one consumer per active account on the real vhost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography.fernet import Fernet
from faststream.rabbit import RabbitBroker
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from devtools.smtp_sink import free_port
from services.sender.accounts import SendingAccount, SendingAccounts, TransportFactory, transport_factory
from services.sender.control import Control, Halt
from services.sender.limits import SendingPace
from services.sender.message import CompiledCampaign, build
from services.sender.pacing import pace_factory
from services.sender.settings import SenderSettings
from services.sender.transport import SesTransport, SmtpTransport
from shared import db
from shared.broker import declare_account_queue
from shared.contracts import AccountConfigured, SendBatch, SesConnection, SmtpConnection, topology, utc_now
from shared.crypto import InvalidToken, SecretBox
from shared.errors import RetryLater
from shared.links import LinkSigner, TrackingLinks
from shared.service import Runtime
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
async def runtime(make_settings: Callable[..., Any], broker: RabbitBroker) -> AsyncIterator[Runtime]:
    """What SendingAccounts needs of the service: the broker, and the pool the pace reads its
    account's sends from."""
    settings = make_settings(SenderSettings)
    service = Runtime("sender", settings, broker, CollectorRegistry(), TracerProvider())
    service.pool = await db.create_pool(settings.DATABASE_URL, "sender", 2)
    yield service
    await service.pool.close()


@pytest.fixture
def handled() -> Handled:
    return Handled()


@pytest.fixture
def control() -> Control:
    return Control()


def sending_accounts(handled: Handled, make_transport: TransportFactory, control: Control) -> SendingAccounts:
    """SendingAccounts as create_app builds it, with the real pace."""
    return SendingAccounts(handled.handle, make_transport, pace_factory(30.0), 2, control)


@pytest.fixture
async def accounts(
    handled: Handled, transports: RecordingTransports, control: Control
) -> AsyncIterator[SendingAccounts]:
    serving = sending_accounts(handled, transports, control)
    yield serving
    await serving.close()


async def handled_batch(handled: Handled, batch: SendBatch) -> list[SendBatch]:
    """The handler's calls with this batch."""
    return [b for b in handled.batches if b.event_id == batch.event_id]


async def publish_batch(broker: RabbitBroker, batch: SendBatch) -> None:
    await broker.publish(
        batch, exchange=topology.SEND.name, routing_key=topology.account_routing_key(batch.account_id)
    )


async def handles_a_batch(runtime: Runtime, handled: Handled, account_id: int) -> None:
    """Publish a batch to the account's queue; wait until the handler gets it."""
    batch = a_batch(a_campaign(account_id), [a_recipient()])
    await publish_batch(runtime.broker, batch)
    assert await eventually(lambda: handled_batch(handled, batch)) == [batch]


async def serve(
    accounts: SendingAccounts, runtime: Runtime, config: AccountConfigured, *, paused: bool = False
) -> SendingAccount:
    """Serve the account, as a sender does that finds it (paused or not) in its database."""
    # Audience declares the queue: batches wait in it even while no consumer ever started.
    await declare_account_queue(runtime.broker, config.account_id)
    await accounts.configure(runtime, config, paused=paused)
    return accounts.get(config.account_id)


class TestSendingAccountsGet:
    def test_an_account_not_served_means_retry_later(self, accounts: SendingAccounts) -> None:
        with pytest.raises(RetryLater, match="not active on this sender"):
            accounts.get(unique_id())


@pytest.mark.connected
class TestSendingAccountsConfigure:
    async def test_an_active_account_gets_a_consumer_transport_and_rate(
        self,
        accounts: SendingAccounts,
        runtime: Runtime,
        transports: RecordingTransports,
        handled: Handled,
        queues: Queues,
    ) -> None:
        config = an_account(rate_per_second=2)

        await accounts.configure(runtime, config, paused=False)

        served = accounts.get(config.account_id)
        assert served.config == config
        assert served.transport is transports.of(config.account_id)[0]
        assert isinstance(served.pace, SendingPace) and served.pace.rate == 2
        assert (served.halted, served.consuming) == (None, True)
        assert await queues.consumers(topology.account_queue(config.account_id).name) == 1
        await handles_a_batch(runtime, handled, config.account_id)

    async def test_configuring_again_replaces_consumer_and_transport(
        self,
        accounts: SendingAccounts,
        runtime: Runtime,
        transports: RecordingTransports,
        handled: Handled,
        queues: Queues,
    ) -> None:
        config = an_account()
        await accounts.configure(runtime, config, paused=False)
        changed = an_account(config.account_id, rate_per_second=5)

        await accounts.configure(runtime, changed, paused=False)

        old, new = transports.of(config.account_id)
        assert old.closed and not new.closed
        assert accounts.get(config.account_id).config == changed
        assert accounts.get(config.account_id).transport is new
        assert await queues.consumers(topology.account_queue(config.account_id).name) == 1
        await handles_a_batch(runtime, handled, config.account_id)

    async def test_an_inactive_account_is_not_served(
        self, accounts: SendingAccounts, runtime: Runtime, transports: RecordingTransports, queues: Queues
    ) -> None:
        config = an_account(active=False)

        await accounts.configure(runtime, config, paused=False)

        with pytest.raises(RetryLater):
            accounts.get(config.account_id)
        assert transports.of(config.account_id) == []
        assert await queues.consumers(topology.account_queue(config.account_id).name) is None

    async def test_deactivating_stops_the_consumer_and_closes_the_transport(
        self, accounts: SendingAccounts, runtime: Runtime, transports: RecordingTransports, queues: Queues
    ) -> None:
        config = an_account()
        await accounts.configure(runtime, config, paused=False)

        await accounts.configure(runtime, an_account(config.account_id, active=False), paused=False)

        with pytest.raises(RetryLater):
            accounts.get(config.account_id)
        [transport] = transports.of(config.account_id)
        assert transport.closed
        assert await queues.consumers(topology.account_queue(config.account_id).name) == 0

    async def test_an_account_whose_secret_cannot_be_read_is_not_served(
        self, handled: Handled, runtime: Runtime, queues: Queues
    ) -> None:
        serving = sending_accounts(handled, transport_factory(BOX, 5.0), Control())
        try:
            readable = smtp_account(2525, username="mailer", password_encrypted=BOX.encrypt("s3cret"))
            await serving.configure(runtime, readable, paused=False)
            unreadable = smtp_account(
                2525,
                username="mailer",
                password_encrypted=OTHER_BOX.encrypt("s3cret"),
                account_id=readable.account_id,
            )

            await serving.configure(runtime, unreadable, paused=False)

            with pytest.raises(RetryLater):
                serving.get(readable.account_id)
            assert await queues.consumers(topology.account_queue(readable.account_id).name) == 0
        finally:
            await serving.close()


@pytest.mark.connected
class TestSendingAccountsClose:
    async def test_stops_every_consumer_and_closes_every_transport(
        self, accounts: SendingAccounts, runtime: Runtime, transports: RecordingTransports, queues: Queues
    ) -> None:
        configs = [an_account(), an_account()]
        for config in configs:
            await accounts.configure(runtime, config, paused=False)

        await accounts.close()

        for config in configs:
            with pytest.raises(RetryLater):
                accounts.get(config.account_id)
            assert [t.closed for t in transports.of(config.account_id)] == [True]
            assert await queues.consumers(topology.account_queue(config.account_id).name) == 0


async def consumers_of(queues: Queues, account_id: int) -> int | None:
    return await queues.consumers(topology.account_queue(account_id).name)


@pytest.mark.connected
class TestSendingAccountsPause:
    async def test_an_account_paused_when_configured_is_served_but_not_consumed(
        self, accounts: SendingAccounts, runtime: Runtime, handled: Handled, queues: Queues
    ) -> None:
        config = an_account()

        served = await serve(accounts, runtime, config, paused=True)

        assert (served.halted, served.consuming) == (Halt.ACCOUNT_PAUSED, False)
        assert await consumers_of(queues, config.account_id) == 0
        batch = a_batch(a_campaign(config.account_id), [a_recipient()])
        await publish_batch(runtime.broker, batch)
        assert await eventually(lambda: queues.ready(topology.account_queue(config.account_id).name)) == 1
        assert await handled_batch(handled, batch) == []

    async def test_resuming_starts_the_consumer_and_what_waited_is_handled(
        self, accounts: SendingAccounts, runtime: Runtime, handled: Handled, queues: Queues
    ) -> None:
        config = an_account()
        await serve(accounts, runtime, config, paused=True)
        batch = a_batch(a_campaign(config.account_id), [a_recipient()])
        await publish_batch(runtime.broker, batch)

        await accounts.set_paused(config.account_id, False)

        served = accounts.get(config.account_id)
        assert (served.halted, served.consuming) == (None, True)
        assert await consumers_of(queues, config.account_id) == 1
        assert await eventually(lambda: handled_batch(handled, batch)) == [batch]

    async def test_pausing_stops_the_consumer_and_the_accounts_running_batches(
        self, accounts: SendingAccounts, runtime: Runtime, control: Control, queues: Queues
    ) -> None:
        config, other = an_account(), an_account()
        for account in (config, other):
            await accounts.configure(runtime, account, paused=False)
        running = control.begin(unique_id(), config.account_id)
        running_elsewhere = control.begin(unique_id(), other.account_id)

        await accounts.set_paused(config.account_id, True)

        served = accounts.get(config.account_id)
        assert (served.halted, served.consuming) == (Halt.ACCOUNT_PAUSED, False)
        assert await consumers_of(queues, config.account_id) == 0
        assert running.reason is Halt.ACCOUNT_PAUSED and running.stopped.is_set()
        assert running_elsewhere.reason is None
        assert await consumers_of(queues, other.account_id) == 1
        # The transport stays open: resuming goes on with it.
        assert not served.transport.closed  # type: ignore[attr-defined]

    async def test_the_same_configuration_again_applies_the_pause_state_only(
        self, accounts: SendingAccounts, runtime: Runtime, transports: RecordingTransports, queues: Queues
    ) -> None:
        config = an_account()
        await accounts.configure(runtime, config, paused=False)

        # The durable queue and the replica's control queue both bring each event.
        await accounts.configure(runtime, config, paused=True)

        assert accounts.get(config.account_id).consuming is False
        assert await consumers_of(queues, config.account_id) == 0
        assert [t.closed for t in transports.of(config.account_id)] == [False]

    async def test_a_concurrent_pause_and_resume_leave_one_consumer_at_most(
        self, accounts: SendingAccounts, runtime: Runtime, queues: Queues
    ) -> None:
        config = an_account()
        await serve(accounts, runtime, config, paused=True)

        await asyncio.gather(*(accounts.set_paused(config.account_id, False) for _ in range(3)))

        assert await consumers_of(queues, config.account_id) == 1


@pytest.mark.connected
class TestSendingAccountsHold:
    async def test_a_held_account_stops_and_goes_on_by_itself_when_the_hold_ends(
        self, accounts: SendingAccounts, runtime: Runtime, control: Control, handled: Handled, queues: Queues
    ) -> None:
        config = an_account()
        await accounts.configure(runtime, config, paused=False)
        running = control.begin(unique_id(), config.account_id)

        accounts.hold(config.account_id, utc_now() + timedelta(seconds=2))

        served = accounts.get(config.account_id)
        assert served.halted is Halt.ACCOUNT_HELD
        assert running.reason is Halt.ACCOUNT_HELD
        assert await eventually(lambda: _stopped(queues, served))

        async def goes_on() -> bool:
            assert (served.halted, served.consuming) == (None, True)
            assert await consumers_of(queues, config.account_id) == 1
            return True

        await eventually(goes_on)
        await handles_a_batch(runtime, handled, config.account_id)

    async def test_a_pause_during_a_hold_outlasts_it(
        self, accounts: SendingAccounts, runtime: Runtime, queues: Queues
    ) -> None:
        config = an_account()
        served = await serve(accounts, runtime, config)
        accounts.hold(config.account_id, utc_now())
        hold_over = served._resume_task
        assert hold_over is not None

        await accounts.set_paused(config.account_id, True)
        await asyncio.gather(hold_over, return_exceptions=True)

        assert (served.halted, served.consuming) == (Halt.ACCOUNT_PAUSED, False)
        assert await consumers_of(queues, config.account_id) == 0

    async def test_a_resume_does_not_end_a_hold(
        self, accounts: SendingAccounts, runtime: Runtime, queues: Queues
    ) -> None:
        config = an_account()
        served = await serve(accounts, runtime, config)
        accounts.hold(config.account_id, utc_now() + timedelta(hours=1))

        await accounts.set_paused(config.account_id, False)

        assert served.halted is Halt.ACCOUNT_HELD
        assert await eventually(lambda: _stopped(queues, served))


async def _stopped(queues: Queues, served: SendingAccount) -> bool:
    assert not served.consuming
    assert await consumers_of(queues, served.config.account_id) == 0
    return True
