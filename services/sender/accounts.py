"""The sending accounts this sender serves: for each active one, a consumer on its queue, its
transport and its pace, (re)built at runtime when the account is configured, stopped when it is
paused or held, started again when it resumes.

Stopping a consumer is a `basic.cancel`: the queue keeps its messages, and the batches already
delivered to this replica come back to the handler, which sees the account halted and puts them
back on the queue. With several replicas, every one applies the pause (the per-replica control
queue), so the account's single-active-consumer queue does not simply move to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from faststream.rabbit import Channel

from services.sender import repository as sender_repo
from services.sender.control import Control, Halt
from services.sender.transport import MailTransport, SesTransport, SmtpTransport
from shared.contracts import AccountConfigured, topology
from shared.contracts.events import utc_now
from shared.crypto import InvalidToken, SecretBox
from shared.errors import RetryLater

if TYPE_CHECKING:
    from shared.service import Runtime

log = logging.getLogger(__name__)

TransportFactory = Callable[[AccountConfigured], MailTransport]


class Pace(Protocol):
    """How fast an account may send: its rate, its 24-hour quota, the provider's throttling."""

    async def acquire(self) -> None: ...

    def try_acquire(self) -> bool: ...

    def held(self) -> bool: ...

    def record_sent(self, at: datetime | None = None) -> None: ...

    def release(self) -> None: ...

    def throttled(self, daily_quota_exceeded: bool = False) -> None: ...


PaceFactory = Callable[["Runtime", AccountConfigured, MailTransport], Awaitable[Pace]]


def transport_factory(secrets: SecretBox, smtp_timeout: float) -> TransportFactory:
    """Builds the real transport of an account, decrypting its secret."""

    def make(config: AccountConfigured) -> MailTransport:
        if config.smtp is not None:
            token = config.smtp.password_encrypted
            return SmtpTransport(
                config.smtp,
                secrets.decrypt(token) if token else None,
                smtp_timeout,
                pool_size=config.max_connections,
            )
        if config.ses is not None:
            return SesTransport(config.ses, secrets.decrypt(config.ses.secret_access_key_encrypted))
        raise ValueError(f"account {config.account_id} has no transport settings")

    return make


@dataclass
class SendingAccount:
    """What sending for one account needs; `halted` while paused or held."""

    config: AccountConfigured
    transport: MailTransport
    pace: Pace
    subscriber: Any = None
    halted: Halt | None = None
    consuming: bool = False
    # One batch sends at a time per account: the prefetched one waits here until the sends of
    # the one before have ended (its outcomes may still be being written), so at most
    # `max_connections` messages are in flight, and as many claimed beside them (all in doubt if
    # the process dies).
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)
    _resume_task: asyncio.Task[None] | None = field(default=None, repr=False)


class SendingAccounts:
    """One consumer per active account that is neither paused nor held."""

    def __init__(
        self,
        handler: Callable[..., Awaitable[None]],
        make_transport: TransportFactory,
        make_pace: PaceFactory,
        prefetch: int,
        control: Control,
    ) -> None:
        self._handler = handler
        self._make_transport = make_transport
        self._make_pace = make_pace
        self._control = control
        # One channel for every account consumer: its per-consumer prefetch applies to each.
        self._channel = Channel(prefetch_count=prefetch)
        self._accounts: dict[int, SendingAccount] = {}
        # Each control event arrives twice (durable and per-replica queues), handled concurrently:
        # changes to one account are serialised, or both would start a consumer.
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    def get(self, account_id: int) -> SendingAccount:
        """The account; RetryLater if this sender does not serve it (yet)."""
        try:
            return self._accounts[account_id]
        except KeyError:
            raise RetryLater(f"account {account_id} is not active on this sender") from None

    async def sync(self, runtime: Runtime, account_id: int) -> None:
        """Make this replica serve the account as the database says now.

        Read under the account's lock: control events are handled concurrently (each arrives on
        two queues, and a configuration and a pause may cross), so a state read before the lock
        could be older than one already applied.
        """
        async with self._locks[account_id]:
            async with runtime.pool.acquire() as conn:
                config, paused = await sender_repo.AccountRepository(conn).get(account_id)
            if config is None:
                await self._set_paused(account_id, paused)
            else:
                await self._configure(runtime, config, paused)

    async def configure(self, runtime: Runtime, config: AccountConfigured, *, paused: bool) -> None:
        """Apply an account's configuration: stop what served it, start anew if it is active."""
        async with self._locks[config.account_id]:
            await self._configure(runtime, config, paused)

    async def _configure(self, runtime: Runtime, config: AccountConfigured, paused: bool) -> None:
        current = self._accounts.get(config.account_id)
        if current is not None and current.config == config:
            # The same event again (durable queue and control queue both bring it).
            await self._set_paused(config.account_id, paused)
            return
        await self._retire(config.account_id)
        if not config.active:
            log.info("account inactive", extra={"account_id": config.account_id})
            return
        try:
            transport = self._make_transport(config)
        except (InvalidToken, ValueError):
            log.error(
                "account cannot be served: its secret cannot be read", extra={"account_id": config.account_id}
            )
            return
        account = SendingAccount(config, transport, await self._make_pace(runtime, config, transport))
        self._accounts[config.account_id] = account
        account.subscriber = runtime.broker.subscriber(
            topology.account_queue(config.account_id), topology.SEND, persistent=False, channel=self._channel
        )
        # The broker keeps dynamic subscribers weakly: the account's reference keeps it alive.
        account.subscriber(self._handler)
        if paused:
            account.halted = Halt.ACCOUNT_PAUSED
            log.info("account paused: consumer not started", extra={"account_id": config.account_id})
            return
        await self._consume(account)

    async def set_paused(self, account_id: int, paused: bool) -> None:
        """Pause (stop before the next message) or resume an account."""
        async with self._locks[account_id]:
            await self._set_paused(account_id, paused)

    async def _set_paused(self, account_id: int, paused: bool) -> None:
        account = self._accounts.get(account_id)
        if paused:
            self._control.halt_account(account_id, Halt.ACCOUNT_PAUSED)
            if account is not None:
                account.halted = Halt.ACCOUNT_PAUSED
                self._cancel_resume(account)
                await self._stop(account)
        elif account is not None and account.halted is Halt.ACCOUNT_PAUSED:
            account.halted = None
            await self._consume(account)

    def hold(self, account_id: int, until: datetime) -> None:
        """Stop the account until `until` (quota or throttling), then go on by itself."""
        account = self._accounts.get(account_id)
        if account is None or account.halted is not None:
            return
        account.halted = Halt.ACCOUNT_HELD
        self._control.halt_account(account_id, Halt.ACCOUNT_HELD)
        account._resume_task = asyncio.create_task(self._resume_after_hold(account, until))

    async def _resume_after_hold(self, account: SendingAccount, until: datetime) -> None:
        await self._stop(account)
        await asyncio.sleep(max(0.0, (until - utc_now()).total_seconds()))
        if account.halted is Halt.ACCOUNT_HELD and self._accounts.get(account.config.account_id) is account:
            account.halted = None
            log.info("account hold over", extra={"account_id": account.config.account_id})
            await self._consume(account)

    def _cancel_resume(self, account: SendingAccount) -> None:
        if account._resume_task is not None and account._resume_task is not asyncio.current_task():
            account._resume_task.cancel()
        account._resume_task = None

    async def _consume(self, account: SendingAccount) -> None:
        if account.consuming:
            return
        subscriber = account.subscriber
        if subscriber._queue_obj is None:
            await subscriber.start()
        else:
            subscriber._consumer_tag = await subscriber._queue_obj.consume(
                subscriber.consume, no_ack=False, arguments=subscriber.consume_args
            )
        account.consuming = True
        log.info("account consumer started", extra={"account_id": account.config.account_id})

    async def _stop(self, account: SendingAccount) -> None:
        """`basic.cancel` the account's consumer, leaving FastStream's subscriber running.

        FastStream's own `stop()` marks the subscriber stopped before it cancels, and a batch
        delivered in between (one the handler just gave back to the queue, or the prefetched one
        behind it) is then dropped without an ack or a nack: stuck on the shared channel until it
        closes. Still running, the handler receives it, sees the account halted and gives it back.
        """
        if not account.consuming:
            return
        account.consuming = False
        subscriber = account.subscriber
        queue, tag = subscriber._queue_obj, subscriber._consumer_tag
        subscriber._consumer_tag = None
        try:
            if queue is not None and tag is not None and not queue.channel.is_closed:
                await queue.cancel(tag)
        except Exception:
            # Its channel is already gone (broker restart, shutdown during a start): so is the consumer.
            log.warning(
                "account consumer did not stop cleanly",
                extra={"account_id": account.config.account_id},
                exc_info=True,
            )
        log.info(
            "account consumer stopped",
            extra={"account_id": account.config.account_id, "reason": str(account.halted)},
        )

    async def _retire(self, account_id: int) -> None:
        account = self._accounts.pop(account_id, None)
        if account is None:
            return
        self._cancel_resume(account)
        account.halted = Halt.ACCOUNT_PAUSED
        await self._stop(account)
        self._control.halt_account(account_id, Halt.ACCOUNT_PAUSED)
        with contextlib.suppress(Exception):
            # Waits (up to the broker's graceful timeout) for the batches in flight to give back.
            await account.subscriber.stop()
        await account.transport.close()

    async def close(self) -> None:
        """Stop every consumer and close every transport."""
        for account_id in list(self._accounts):
            with contextlib.suppress(Exception):
                await self._retire(account_id)
