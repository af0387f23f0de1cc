"""A recording mail transport: the fake at the sender's provider boundary."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from services.sender.limits import ProviderLimits
from services.sender.transport import (
    AccountRefusedError,
    IndeterminateSendError,
    OutgoingMail,
    PermanentSendError,
    ThrottledError,
    TransientSendError,
)
from shared.contracts import AccountConfigured

PERMANENT_REPLY = "550 5.1.1 user unknown"
TRANSIENT_REPLY = "451 4.7.1 try later"
THROTTLED_REPLY = "454 Throttling failure: Maximum sending rate exceeded."
REFUSED_REPLY = "535 Authentication Credentials Invalid"


class RecordingTransport:
    """A MailTransport that keeps what it sends and refuses the recipients its factory was told to."""

    def __init__(self, config: AccountConfigured, factory: RecordingTransports) -> None:
        self.config = config
        self._factory = factory
        self.sent: list[OutgoingMail] = []
        self.closed = False

    async def send(self, mail: OutgoingMail) -> str:
        """Refuse as told, else keep the mail and answer a provider id."""
        assert not self.closed, "send on a closed transport"
        factory = self._factory
        factory.attempts[mail.recipient] += 1
        if factory.send_seconds:
            await asyncio.sleep(factory.send_seconds)
        if mail.recipient in factory.permanent:
            raise PermanentSendError(PERMANENT_REPLY)
        if mail.recipient in factory.account_refused:
            raise AccountRefusedError(REFUSED_REPLY)
        if mail.recipient in factory.indeterminate:
            raise IndeterminateSendError("connection lost after the message data was sent")
        if factory.throttled[mail.recipient] > 0:
            factory.throttled[mail.recipient] -= 1
            raise ThrottledError(THROTTLED_REPLY, daily_quota_exceeded=False)
        if factory.transient[mail.recipient] > 0:
            factory.transient[mail.recipient] -= 1
            raise TransientSendError(TRANSIENT_REPLY)
        self.sent.append(mail)
        factory.sent_at.append((self.config.account_id, time.monotonic()))
        return f"fake-{self.config.account_id}-{mail.recipient}"

    async def provider_limits(self) -> ProviderLimits | None:
        """Like an SMTP server: no limits of its own."""
        return None

    async def close(self) -> None:
        """Remember that it was closed."""
        self.closed = True


class RecordingTransports:
    """A TransportFactory handing out RecordingTransports, which refuse some recipients on request."""

    def __init__(self) -> None:
        self.made: list[RecordingTransport] = []
        self.permanent: set[str] = set()
        self.transient: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.account_refused: set[str] = set()
        self.indeterminate: set[str] = set()
        self.throttled: Counter[str] = Counter()
        # How long each send takes, and when each one ended: (account id, time.monotonic()).
        self.send_seconds = 0.0
        self.sent_at: list[tuple[int, float]] = []

    def __call__(self, config: AccountConfigured) -> RecordingTransport:
        transport = RecordingTransport(config, self)
        self.made.append(transport)
        return transport

    def refuse_permanently(self, email: str) -> None:
        """Every send to `email` fails with a 5xx."""
        self.permanent.add(email)

    def refuse_transiently(self, email: str, times: int = 1) -> None:
        """The next `times` sends to `email` fail with a 4xx."""
        self.transient[email] += times

    def refuse_account_on(self, email: str) -> None:
        """A send to `email` gets an authentication refusal (the account's fault, not the recipient's)."""
        self.account_refused.add(email)

    def lose_connection_after_data(self, email: str) -> None:
        """A send to `email` dies after the message data was sent: it may have been delivered."""
        self.indeterminate.add(email)

    def throttle(self, email: str, times: int = 1) -> None:
        """The next `times` sends to `email` get the provider's throttling reply."""
        self.throttled[email] += times

    def of(self, account_id: int) -> list[RecordingTransport]:
        """The transports made for an account, oldest first."""
        return [t for t in self.made if t.config.account_id == account_id]

    def sent(self, account_id: int) -> list[OutgoingMail]:
        """Every mail sent for an account, in order."""
        return [mail for t in self.of(account_id) for mail in t.sent]

    def sent_to(self, account_id: int) -> Counter[str]:
        """How many mails each recipient got through the account."""
        return Counter(mail.recipient for mail in self.sent(account_id))
