"""The sending accounts this sender serves: for each active one, a consumer on its queue, its
transport and its rate limiter, (re)built at runtime when the account is configured."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faststream.rabbit import Channel, RabbitBroker

from services.sender.throttle import TokenBucket
from services.sender.transport import MailTransport, SesTransport, SmtpTransport
from shared.contracts import AccountConfigured, topology
from shared.crypto import InvalidToken, SecretBox
from shared.errors import RetryLater

log = logging.getLogger(__name__)

TransportFactory = Callable[[AccountConfigured], MailTransport]


def transport_factory(secrets: SecretBox, smtp_timeout: float) -> TransportFactory:
    """Builds the real transport of an account, decrypting its secret."""

    def make(config: AccountConfigured) -> MailTransport:
        if config.smtp is not None:
            token = config.smtp.password_encrypted
            return SmtpTransport(config.smtp, secrets.decrypt(token) if token else None, smtp_timeout)
        if config.ses is not None:
            return SesTransport(config.ses, secrets.decrypt(config.ses.secret_access_key_encrypted))
        raise ValueError(f"account {config.account_id} has no transport settings")

    return make


@dataclass
class SendingAccount:
    """What sending for one account needs."""

    config: AccountConfigured
    transport: MailTransport
    bucket: TokenBucket
    subscriber: Any = None


class SendingAccounts:
    """One consumer per active account; configuring an account replaces its consumer and transport."""

    def __init__(
        self, handler: Callable[..., Awaitable[None]], make_transport: TransportFactory, prefetch: int
    ) -> None:
        self._handler = handler
        self._make_transport = make_transport
        # One channel for every account consumer: its per-consumer prefetch applies to each.
        self._channel = Channel(prefetch_count=prefetch)
        self._accounts: dict[int, SendingAccount] = {}

    def get(self, account_id: int) -> SendingAccount:
        """The active account; RetryLater if this sender does not serve it (yet)."""
        try:
            return self._accounts[account_id]
        except KeyError:
            raise RetryLater(f"account {account_id} is not active on this sender") from None

    async def configure(self, broker: RabbitBroker, config: AccountConfigured) -> None:
        """Apply an account's configuration: stop what served it, start anew if it is active."""
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
        account = SendingAccount(config, transport, TokenBucket(config.rate_per_second))
        self._accounts[config.account_id] = account
        subscriber = broker.subscriber(
            topology.account_queue(config.account_id), topology.SEND, persistent=False, channel=self._channel
        )
        subscriber(self._handler)
        await subscriber.start()
        # The broker keeps dynamic subscribers weakly: this reference keeps it alive.
        account.subscriber = subscriber
        log.info("account consumer started", extra={"account_id": config.account_id})

    async def _retire(self, account_id: int) -> None:
        account = self._accounts.pop(account_id, None)
        if account is None:
            return
        if account.subscriber is not None:
            try:
                await account.subscriber.stop()
            except Exception:
                # Its channel is already gone (broker restart, shutdown during a start): so is the consumer.
                log.warning(
                    "account consumer did not stop cleanly", extra={"account_id": account_id}, exc_info=True
                )
        await account.transport.close()

    async def close(self) -> None:
        """Stop every consumer and close every transport."""
        for account_id in list(self._accounts):
            await self._retire(account_id)
