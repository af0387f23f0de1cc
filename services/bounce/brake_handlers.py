"""The reputation brake's consumers: bounce's copy of the accounts, and the counted events."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter

from services.bounce import reputation_counts
from services.bounce.reputation_repository import ReputationRepository
from shared.contracts import AccountConfigured, MessageBounced, MessageComplained, topology
from shared.service import HandlerRuntime

router = RabbitRouter()


@router.subscriber(topology.BOUNCE_ACCOUNT_CONFIGURED, topology.EVENTS)
async def keep_account(event: AccountConfigured, runtime: HandlerRuntime) -> None:
    """Keep the account's transport, SES credentials and brake settings."""
    async with runtime.transaction() as conn:
        await ReputationRepository(conn).configure(event)


@router.subscriber(topology.BOUNCE_MESSAGE_BOUNCED, topology.EVENTS)
async def count_bounce(event: MessageBounced, runtime: HandlerRuntime) -> None:
    """Count a hard bounce against its account."""
    async with runtime.transaction() as conn:
        await reputation_counts.count_bounced(conn, event)


@router.subscriber(topology.BOUNCE_MESSAGE_COMPLAINED, topology.EVENTS)
async def count_complaint(event: MessageComplained, runtime: HandlerRuntime) -> None:
    """Count a complaint against its account."""
    async with runtime.transaction() as conn:
        await reputation_counts.count_complained(conn, event)
