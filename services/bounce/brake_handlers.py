"""The reputation brake's consumers: bounce's copy of the accounts, and the counted events."""

from __future__ import annotations

import logging
from datetime import timedelta

from faststream.rabbit import RabbitRouter

from services.bounce import reputation_counts
from services.bounce.reputation_repository import ReputationRepository
from shared.contracts import AccountConfigured, AccountResumed, MessageBounced, MessageComplained, topology
from shared.service import HandlerRuntime, Runtime

log = logging.getLogger(__name__)

router = RabbitRouter()


def _bucket(runtime: Runtime) -> timedelta:
    return reputation_counts.bucket_of(reputation_counts.window_of(runtime.settings))


@router.subscriber(topology.BOUNCE_ACCOUNT_CONFIGURED, topology.EVENTS)
async def keep_account(event: AccountConfigured, runtime: HandlerRuntime) -> None:
    """Keep the account's transport, SES credentials and brake settings."""
    async with runtime.transaction() as conn:
        await ReputationRepository(conn).configure(event)


@router.subscriber(topology.BOUNCE_MESSAGE_BOUNCED, topology.EVENTS)
async def count_bounce(event: MessageBounced, runtime: HandlerRuntime) -> None:
    """Count a hard bounce against its account."""
    async with runtime.transaction() as conn:
        await reputation_counts.count_bounced(conn, event, _bucket(runtime))


@router.subscriber(topology.BOUNCE_MESSAGE_COMPLAINED, topology.EVENTS)
async def count_complaint(event: MessageComplained, runtime: HandlerRuntime) -> None:
    """Count a complaint against its account."""
    async with runtime.transaction() as conn:
        await reputation_counts.count_complained(conn, event, _bucket(runtime))


@router.subscriber(topology.BOUNCE_ACCOUNT_RESUMED, topology.EVENTS)
async def forget_pause(event: AccountResumed, runtime: HandlerRuntime) -> None:
    """An account an operator (or the sender) resumed is judged afresh at the next poll, and paused
    again if its rates are still over: otherwise the brake, believing it paused, would let it send
    unjudged. Keeping it sending despite its rates is the override's job, which is logged."""
    if event.source == "bounce":
        return
    async with runtime.transaction() as conn:
        forgotten = await ReputationRepository(conn).forget_pause(event.account_id, event.occurred_at)
    if forgotten:
        log.warning(
            "account %s resumed by %s during a reputation pause; the brake judges it again",
            event.account_id,
            event.source,
        )
