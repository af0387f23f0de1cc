"""How messages leave: one protocol, an SMTP transport (aiosmtplib, a small connection pool) and an
SES transport (aioboto3).

Every refusal becomes one of these `SendError`s, each carrying the provider's reply as `reason`:

- `PermanentSendError`: about this recipient (5xx); the delivery fails.
- `TransientSendError`: about this recipient or the connection (4xx, connection lost twice);
  the delivery is retried later.
- `ThrottledError` (a `TransientSendError`): the provider slows the whole account down ("454
  Throttling failure", 421 too many connections, SES `Throttling`); `daily_quota_exceeded` says
  whether the 24-hour quota, not the rate, was hit.
- `AccountRefusedError`: the account itself is refused (authentication, unverified identity,
  sending paused); not the recipient's fault, so the account must pause rather than burn the list.
- `IndeterminateSendError`: the connection died after the whole message was handed over and
  before the provider answered; it may or may not have been accepted, so it is not resent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aioboto3
import aiosmtplib
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
)

from services.sender.limits import ProviderLimits
from shared.contracts import SesConnection, SmtpConnection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMail:
    """A rendered message ready for the provider."""

    envelope_from: str
    recipient: str
    data: bytes
    message_id: str


class SendError(Exception):
    """The provider did not take the message; `reason` is its reply."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    """Worth retrying later (4xx, throttling, connection lost)."""


class PermanentSendError(SendError):
    """Never worth retrying for this recipient (5xx)."""


class ThrottledError(TransientSendError):
    """The provider slows the whole account down; the message was dropped and may be sent later."""

    def __init__(self, reason: str, *, daily_quota_exceeded: bool) -> None:
        super().__init__(reason)
        self.daily_quota_exceeded = daily_quota_exceeded


class AccountRefusedError(SendError):
    """The account cannot send at all (credentials, identity, paused by the provider)."""


class IndeterminateSendError(SendError):
    """The message may have been accepted: the connection died while the provider had it all."""


class MailTransport(Protocol):
    """Sends one message; returns the provider's message id."""

    async def send(self, mail: OutgoingMail) -> str: ...

    async def provider_limits(self) -> ProviderLimits | None: ...

    async def close(self) -> None: ...


# Replies that speak about the account's pace, not the recipient: SES's "454 Throttling failure:
# Maximum sending rate exceeded / Daily message quota exceeded" and the usual "421 too many
# connections" / rate-limit wordings of other servers.
_THROTTLED = re.compile(
    r"throttl|maximum sending rate|daily message quota|too many (connections|messages|concurrent)|rate limit",
    re.IGNORECASE,
)
_DAILY_QUOTA = re.compile(r"daily message quota", re.IGNORECASE)
# Refusals of the account rather than of the recipient (SES's SMTP reply table plus what servers say
# when an account is paused or suspended). Shared with SES's MessageRejected texts.
_ACCOUNT_REFUSED = re.compile(
    r"access denied|not verified|did not have authority|not authori[sz]ed|not subscribed|"
    r"authentication|paused|suspend|probation",
    re.IGNORECASE,
)
# 530 authentication required, 534 mechanism too weak, 535 credentials invalid, 538 encryption
# required for the mechanism: the same answer for every message of the account.
_ACCOUNT_CODES = {530, 534, 535, 538}

SmtpStage = Literal["connect", "mail", "rcpt", "data"]


def classify_smtp_reply(code: int, text: str, stage: SmtpStage) -> SendError:
    """The error an SMTP reply means, given the step of the transaction that got it."""
    reason = f"{code} {text}".strip()
    if _THROTTLED.search(text):
        return ThrottledError(reason, daily_quota_exceeded=bool(_DAILY_QUOTA.search(text)))
    if 500 <= code < 600:
        # Before RCPT no recipient is involved: a 5xx to the greeting, EHLO or MAIL FROM refuses the
        # account's sender or server, and would refuse every following message too.
        if code in _ACCOUNT_CODES or stage in ("connect", "mail") or _ACCOUNT_REFUSED.search(text):
            return AccountRefusedError(reason)
        return PermanentSendError(reason)
    if code == 421:
        # 421 closes the channel for every message of the account, whatever its text says.
        return ThrottledError(reason, daily_quota_exceeded=False)
    return TransientSendError(reason)


class _ConnectionLost(Exception):
    """The connection failed before the message data was handed over: sending again is safe."""


def _certificate_refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class SmtpTransport:
    """Up to `pool_size` messages in flight, each on its own kept connection.

    A connection found dead before the message data was sent (the server dropped an idle one) is
    replaced and the message sent once more; a second loss is a TransientSendError. A loss while the
    server holds the message is an IndeterminateSendError: resending could deliver it twice.
    """

    def __init__(
        self,
        connection: SmtpConnection,
        password: str | None,
        timeout: float,
        pool_size: int = 3,
        *,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._options: dict[str, Any] = {
            "hostname": connection.host,
            "port": connection.port,
            "use_tls": connection.security == "tls",
            # False, not None: None would try STARTTLS whenever offered, even on the plain local sink.
            "start_tls": connection.security == "starttls",
            "username": connection.username,
            "password": password,
            "timeout": timeout,
            "tls_context": tls_context,
        }
        self._permits = asyncio.Semaphore(pool_size)
        self._idle: list[aiosmtplib.SMTP] = []
        # Bumped by close(): connections busy during a close are quit when they come back.
        self._generation = 0

    async def send(self, mail: OutgoingMail) -> str:
        """Send on a pooled connection; the provider id is our Message-ID (SMTP has no other)."""
        async with self._permits:
            generation = self._generation
            client = self._idle.pop() if self._idle else None
            # False while the connection may be mid-transaction (a cancelled send): never pooled then.
            reusable = False
            lost_once = False
            try:
                while True:
                    try:
                        client = client or await self._connect()
                        await self._transaction(client, mail)
                        reusable = True
                        return mail.message_id
                    except _ConnectionLost as lost:
                        client = None
                        if lost_once:
                            raise TransientSendError(f"connection problem: {lost}") from lost
                        lost_once = True
                    except SendError:
                        reusable = True
                        raise
            finally:
                if client is not None:
                    await self._give_back(client, generation, reusable)

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(**self._options)
        try:
            await client.connect()
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise classify_smtp_reply(exc.code, exc.message, "connect") from exc
        except OSError as exc:
            # aiosmtplib's connection errors, disconnections and timeouts are all OSErrors.
            client.close()
            if _certificate_refused(exc):
                raise AccountRefusedError(f"server certificate not trusted: {exc}") from exc
            raise _ConnectionLost(str(exc) or type(exc).__name__) from exc
        except aiosmtplib.SMTPException as exc:
            # Connected, but STARTTLS or AUTH that the settings need is not offered: no message can go.
            client.close()
            raise AccountRefusedError(f"server does not offer what the account needs: {exc}") from exc
        except BaseException:
            # Cancelled mid-handshake (the account was paused): leave no half-open socket behind.
            client.close()
            raise
        return client

    async def _transaction(self, client: aiosmtplib.SMTP, mail: OutgoingMail) -> None:
        stage: SmtpStage = "mail"
        try:
            await client.mail(mail.envelope_from, options=self._mail_options(client, mail))
            stage = "rcpt"
            await client.rcpt(mail.recipient)
            stage = "data"
            await client.data(mail.data)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(client)
            raise classify_smtp_reply(exc.code, exc.message, stage) from exc
        except ValueError as exc:
            # aiosmtplib refuses an address it cannot put on the wire safely (control characters).
            await self._reset(client)
            raise PermanentSendError(f"invalid address: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            if stage == "data":
                # aiosmtplib writes DATA, the message and the final dot in one call: a loss in it may
                # come after the server took the whole message, so a second send could duplicate it.
                raise IndeterminateSendError(f"connection lost during DATA: {exc}") from exc
            raise _ConnectionLost(str(exc) or type(exc).__name__) from exc

    @staticmethod
    def _mail_options(client: aiosmtplib.SMTP, mail: OutgoingMail) -> list[str]:
        # SIZE lets the server refuse an oversized message before we upload it (RFC 1870).
        return [f"SIZE={len(mail.data)}"] if client.supports_extension("size") else []

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        """Clear the refused envelope so the connection can carry the next message; drop it if not."""
        if not client.is_connected:
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def _give_back(self, client: aiosmtplib.SMTP, generation: int, reusable: bool) -> None:
        if not reusable:
            client.close()
            return
        if not client.is_connected:
            return
        if generation != self._generation:
            await self._quit(client)
            return
        self._idle.append(client)

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def provider_limits(self) -> ProviderLimits | None:
        """SMTP servers do not tell their limits."""
        return None

    async def close(self) -> None:
        """Say goodbye on every idle connection; busy ones are closed when their send ends."""
        self._generation += 1
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(client) for client in idle))


# SES codes that refuse the account, whatever the message: credentials, permissions, a paused
# account or configuration set, a MAIL FROM domain without its MX record.
_SES_ACCOUNT_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "AccountSendingPausedException",
    "ConfigurationSetDoesNotExist",
    "ConfigurationSetSendingPausedException",
    "InvalidClientTokenId",
    "MailFromDomainNotVerifiedException",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
}
_SES_THROTTLING_CODES = {"Throttling", "ThrottlingException", "MaxSendingRateExceeded"}
_SES_PERMANENT_CODES = {"MessageRejected", "InvalidParameterValue"}


def classify_ses_error(exc: ClientError | BotoCoreError) -> SendError:
    """The error an SES refusal or a failed call means."""
    if isinstance(exc, EndpointConnectionError):
        # Includes ConnectTimeoutError: the request never reached SES.
        return TransientSendError(str(exc))
    if isinstance(exc, HTTPClientError):
        # A read timeout or a connection closed while SES had the request: it may have sent it.
        return IndeterminateSendError(str(exc))
    if not isinstance(exc, ClientError):
        return TransientSendError(str(exc))
    error = exc.response.get("Error", {})
    code, text = str(error.get("Code", "Error")), str(error.get("Message", ""))
    reason = f"{code}: {text}".strip()
    if code in _SES_THROTTLING_CODES or _THROTTLED.search(text):
        return ThrottledError(reason, daily_quota_exceeded=bool(_DAILY_QUOTA.search(text)))
    if code in _SES_ACCOUNT_CODES:
        return AccountRefusedError(reason)
    if code in _SES_PERMANENT_CODES:
        # In the sandbox "Email address is not verified" names the recipient too; it still refuses
        # the account's whole list until the account leaves the sandbox, so it pauses the account.
        return AccountRefusedError(reason) if _ACCOUNT_REFUSED.search(text) else PermanentSendError(reason)
    return TransientSendError(reason)


# botocore retries throttles and dropped connections itself by default: a retried throttle hides the
# account-wide signal from our pacing, and a retry after a read timeout can send the message twice.
_SES_CONFIG = AioConfig(retries={"total_max_attempts": 1})


class SesTransport:
    """Amazon SES `SendRawEmail` through aioboto3, on one client kept open."""

    def __init__(self, connection: SesConnection, secret_access_key: str) -> None:
        self._connection = connection
        self._session = aioboto3.Session(
            aws_access_key_id=connection.access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=connection.region,
        )
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def _ses(self) -> Any:
        if self._client is None:
            self._client = await self._stack.enter_async_context(
                self._session.client("ses", endpoint_url=self._connection.endpoint_url, config=_SES_CONFIG)
            )
        return self._client

    async def send(self, mail: OutgoingMail) -> str:
        """Send the raw message; the provider id is SES's MessageId."""
        client = await self._ses()
        try:
            answer = await client.send_raw_email(
                Source=mail.envelope_from, Destinations=[mail.recipient], RawMessage={"Data": mail.data}
            )
        except (ClientError, BotoCoreError) as exc:
            raise classify_ses_error(exc) from exc
        return str(answer["MessageId"])

    async def provider_limits(self) -> ProviderLimits | None:
        """The account's SES quota, or None when it cannot be read (an IAM policy that allows only
        SendRawEmail is common): the configured limits then apply alone."""
        client = await self._ses()
        try:
            quota = await client.get_send_quota()
        except (ClientError, BotoCoreError) as exc:
            log.warning("SES send quota not readable: %s", exc)
            return None
        max_24_hour_send = float(quota["Max24HourSend"])
        return ProviderLimits(
            max_send_rate=float(quota["MaxSendRate"]),
            # SES documents -1 as "no 24-hour limit".
            max_24_hour_send=None if max_24_hour_send < 0 else int(max_24_hour_send),
            sent_last_24_hours=int(quota["SentLast24Hours"]),
        )

    async def close(self) -> None:
        """Close the client."""
        await self._stack.aclose()
        self._client = None
