"""The optional mirror of the shared suppression list into each SES account's own
account-level suppression list (SES v2 PutSuppressedDestination / DeleteSuppressedDestination).

With it, SES itself refuses a suppressed address even for mail another system sends through the
same account. It is off unless SES_SUPPRESSION_MIRROR is set, and needs the account's key to
hold ses:PutSuppressedDestination and ses:DeleteSuppressedDestination. moto does not implement
these APIs, so the mirror sits behind `SuppressionMirror` and the tests use a recording fake:
the SES implementation is not exercised against AWS here.

It follows bounce's own `address.suppressed` / `address.unsuppressed` events rather than acting
inside the suppressing transaction: an AWS call must not hold a database transaction, and a
failure is retried by the broker's retry tiers (both calls are idempotent).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

import aioboto3

from services.bounce.reputation_repository import ReputationRepository
from shared.contracts import SesConnection
from shared.crypto import SecretBox
from shared.errors import RetryLater
from shared.service import Runtime

SesReason = Literal["BOUNCE", "COMPLAINT"]


class SuppressionMirror(Protocol):
    """Where suppressions are copied: one SES account's own suppression list."""

    async def put(self, ses: SesConnection, email: str, reason: SesReason) -> None:
        """Suppress the address in the account's list."""

    async def delete(self, ses: SesConnection, email: str) -> None:
        """Take the address off the account's list (absent: nothing to do)."""


class SesSuppressionMirror:
    """The account-level suppression list of SES v2, with each account's own credentials."""

    def __init__(self, secrets: SecretBox) -> None:
        self._secrets = secrets

    def _session(self, ses: SesConnection) -> aioboto3.Session:
        return aioboto3.Session(
            aws_access_key_id=ses.access_key_id,
            aws_secret_access_key=self._secrets.decrypt(ses.secret_access_key_encrypted),
            region_name=ses.region,
        )

    async def put(self, ses: SesConnection, email: str, reason: SesReason) -> None:
        """Suppress the address in the account's list."""
        async with self._session(ses).client("sesv2", endpoint_url=ses.endpoint_url) as client:
            await client.put_suppressed_destination(EmailAddress=email, Reason=reason)

    async def delete(self, ses: SesConnection, email: str) -> None:
        """Take the address off the account's list (absent: nothing to do)."""
        async with self._session(ses).client("sesv2", endpoint_url=ses.endpoint_url) as client:
            with contextlib.suppress(client.exceptions.NotFoundException):
                await client.delete_suppressed_destination(EmailAddress=email)


def ses_reason(reason: str) -> SesReason:
    """SES knows two reasons: a complaint, and any bounce (soft-bounce and manual entries too)."""
    return "COMPLAINT" if reason == "complaint" else "BOUNCE"


async def to_every_ses_account(runtime: Runtime, call: Callable[[SesConnection], Awaitable[None]]) -> None:
    """Apply a mirror call to every active SES account; RetryLater if any failed (the retry
    repeats the calls that succeeded, which are idempotent)."""
    async with runtime.pool.acquire() as conn:
        accounts = await ReputationRepository(conn).active_accounts()
    failed = []
    for account in accounts:
        if account.ses is None:
            continue
        try:
            await call(account.ses)
        except Exception as exc:
            failed.append(f"account {account.account_id}: {type(exc).__name__}")
    if failed:
        raise RetryLater("SES suppression list not updated for " + ", ".join(failed))
