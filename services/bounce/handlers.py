"""Bounce's consumers: it learns of every sent message to trace feedback back to it."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter

from services.bounce import repository as bounce_repo
from services.bounce import reputation_counts
from shared.contracts import MessageSent, topology
from shared.service import HandlerRuntime

router = RabbitRouter()


@router.subscriber(topology.BOUNCE_MESSAGE_SENT, topology.EVENTS)
async def record_sent(event: MessageSent, runtime: HandlerRuntime) -> None:
    """Remember which campaign, recipient and account a provider message id belongs to."""
    async with runtime.transaction() as conn:
        await bounce_repo.SentMessageRepository(conn).record(event)
        await reputation_counts.count_sent(conn, event)
