"""Whether SES lets a sender address send: the address itself or its domain must be a verified
identity of the SES account the address belongs to.

Read live through aioboto3 (`GetIdentityVerificationAttributes`, SES v1, which moto implements),
with the account's own credentials. An SMTP account has no SES API to ask: its status is
"not_applicable" and the SMTP server judges at send time.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from services.campaign.models import Account
from shared.crypto import SecretBox

IdentityStatus = Literal["verified", "pending", "failed", "not_verified", "not_applicable"]

_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2})
_TIMEOUT_SECONDS = 15.0


class IdentityUnavailable(Exception):
    """SES could not be asked (network, credentials, throttling): try again later."""


class IdentityCheck(BaseModel):
    """The SES verification of a sender address: `status` of the address or, failing that, of
    its domain; `identity` is the one that decided it."""

    email: str
    transport: Literal["smtp", "ses"]
    status: IdentityStatus
    identity: str | None = None
    region: str | None = None

    @property
    def may_send(self) -> bool:
        """Whether mail from this address may be handed to the provider."""
        return self.status in ("verified", "not_applicable")

    def refusal(self) -> str:
        """Why a send from this address is refused (for a 4xx or a send.rejected)."""
        return (
            f"the sender address {self.email} is not verified in Amazon SES ({self.region}): "
            f"status {self.status}; verify the address or its domain in SES first"
        )


_STATUS: dict[str, IdentityStatus] = {
    "Success": "verified",
    "Pending": "pending",
    "Failed": "failed",
    "TemporaryFailure": "pending",
    "NotStarted": "not_verified",
}


async def check(account: Account, email: str, secrets: SecretBox) -> IdentityCheck:
    """The SES status of `email` (address first, then its domain) for this account."""
    if account.transport != "ses":
        return IdentityCheck(email=email, transport=account.transport, status="not_applicable")
    domain = email.rsplit("@", 1)[-1].lower()
    session = aioboto3.Session(
        aws_access_key_id=account.ses_access_key_id,
        aws_secret_access_key=secrets.decrypt(account.ses_secret_access_key_encrypted or ""),
        region_name=account.ses_region,
    )
    try:
        async with asyncio.timeout(_TIMEOUT_SECONDS):
            async with session.client("ses", endpoint_url=account.ses_endpoint_url, config=_CONFIG) as ses:
                answer = await ses.get_identity_verification_attributes(Identities=[email, domain])
    except (ClientError, BotoCoreError, TimeoutError, OSError) as exc:
        raise IdentityUnavailable(f"SES identity status not readable: {exc}") from exc
    attributes = answer.get("VerificationAttributes", {})
    statuses: list[tuple[str, IdentityStatus]] = [
        (identity, _STATUS.get(attributes[identity].get("VerificationStatus", ""), "not_verified"))
        for identity in (email, domain)
        if identity in attributes
    ]
    for identity, status in statuses:
        if status == "verified":
            return IdentityCheck(
                email=email, transport="ses", status=status, identity=identity, region=account.ses_region
            )
    if statuses:
        return IdentityCheck(
            email=email,
            transport="ses",
            status=statuses[0][1],
            identity=statuses[0][0],
            region=account.ses_region,
        )
    return IdentityCheck(email=email, transport="ses", status="not_verified", region=account.ses_region)
