"""How messages leave: one protocol, an SMTP transport (aiosmtplib) and an SES transport (aioboto3).

A transport says whether a refusal is permanent (the delivery fails with the provider's reply)
or transient (the batch is retried later; nothing is marked failed).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import aioboto3
import aiosmtplib
from botocore.exceptions import BotoCoreError, ClientError

from shared.contracts import SesConnection, SmtpConnection


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


class MailTransport(Protocol):
    """Sends one message; returns the provider's message id."""

    async def send(self, mail: OutgoingMail) -> str: ...

    async def close(self) -> None: ...


def _smtp_error(exc: aiosmtplib.SMTPResponseException) -> SendError:
    reason = f"{exc.code} {exc.message}".strip()
    return PermanentSendError(reason) if 500 <= exc.code < 600 else TransientSendError(reason)


class SmtpTransport:
    """One SMTP connection reused across messages (reconnected when lost), one message at a time."""

    def __init__(self, connection: SmtpConnection, password: str | None, timeout: float) -> None:
        self._options: dict[str, Any] = {
            "hostname": connection.host,
            "port": connection.port,
            "use_tls": connection.security == "tls",
            "start_tls": connection.security == "starttls",
            "username": connection.username,
            "password": password,
            "timeout": timeout,
        }
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is None or not self._client.is_connected:
            client = aiosmtplib.SMTP(**self._options)
            await client.connect()
            self._client = client
        return self._client

    async def send(self, mail: OutgoingMail) -> str:
        """Send over the kept connection; the provider id is our Message-ID (SMTP has no other)."""
        async with self._lock:
            try:
                client = await self._connected()
                await client.sendmail(mail.envelope_from, [mail.recipient], mail.data)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                raise _smtp_error(exc.recipients[0]) from exc
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset()
                raise _smtp_error(exc) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                await self._reset()
                raise TransientSendError(f"connection problem: {exc}") from exc
        return mail.message_id

    async def _reset(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def close(self) -> None:
        """Say goodbye to the server if connected."""
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.quit()
            except (aiosmtplib.SMTPException, OSError):
                self._client.close()
        self._client = None


# SES error codes that will never succeed for this message; anything else is retried.
_SES_PERMANENT = {"MessageRejected", "MailFromDomainNotVerifiedException", "InvalidParameterValue"}


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

    async def send(self, mail: OutgoingMail) -> str:
        """Send the raw message; the provider id is SES's MessageId."""
        if self._client is None:
            self._client = await self._stack.enter_async_context(
                self._session.client("ses", endpoint_url=self._connection.endpoint_url)
            )
        try:
            answer = await self._client.send_raw_email(
                Source=mail.envelope_from, Destinations=[mail.recipient], RawMessage={"Data": mail.data}
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip()
            raise (PermanentSendError if error.get("Code") in _SES_PERMANENT else TransientSendError)(
                reason
            ) from exc
        except BotoCoreError as exc:
            raise TransientSendError(str(exc)) from exc
        return str(answer["MessageId"])

    async def close(self) -> None:
        """Close the client."""
        await self._stack.aclose()
        self._client = None
