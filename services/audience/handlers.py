"""Audience's consumers: started campaigns are resolved; the suppression list and global
unsubscribes are copied locally, so resolution subtracts them without asking another service.

The copies are idempotent without an event ledger: a suppression state only replaces an older
one (`occurred_at`), and an unsubscribe is recorded once.
"""

from __future__ import annotations

from faststream.rabbit import RabbitRouter

from services.audience import repository as audience_repo
from services.audience import resolution
from services.audience.addresses import comparable
from services.audience.dispatcher import Dispatcher
from shared.contracts import (
    AddressSuppressed,
    AddressUnsuppressed,
    CampaignStarted,
    RecipientUnsubscribed,
    topology,
)
from shared.service import HandlerRuntime
from shared.telemetry import current_trace_headers

router = RabbitRouter()


@router.subscriber(topology.AUDIENCE_CAMPAIGN_STARTED, topology.EVENTS)
async def resolve_campaign(event: CampaignStarted, runtime: HandlerRuntime) -> None:
    """Resolve every group of the campaign, then let the dispatcher queue it (or fail it)."""
    remote: resolution.Remote = runtime.state["remote"]
    async with runtime.pool.acquire() as conn:
        resolved = await resolution.resolve(conn, event, current_trace_headers(), remote)
    runtime.relay.notify()
    if resolved:
        dispatcher: Dispatcher = runtime.state["dispatcher"]
        dispatcher.notify()


@router.subscriber(topology.AUDIENCE_ADDRESS_SUPPRESSED, topology.EVENTS)
async def suppress_address(event: AddressSuppressed, runtime: HandlerRuntime) -> None:
    """Future resolutions leave the address out."""
    async with runtime.pool.acquire() as conn:
        await audience_repo.SuppressionRepository(conn).set_suppressed(
            comparable(event.email), True, event.reason, event.occurred_at
        )


@router.subscriber(topology.AUDIENCE_ADDRESS_UNSUPPRESSED, topology.EVENTS)
async def unsuppress_address(event: AddressUnsuppressed, runtime: HandlerRuntime) -> None:
    """An admin took the address off the suppression list: future resolutions include it again."""
    async with runtime.pool.acquire() as conn:
        await audience_repo.SuppressionRepository(conn).set_suppressed(
            comparable(event.email), False, "", event.occurred_at
        )


@router.subscriber(topology.AUDIENCE_RECIPIENT_UNSUBSCRIBED, topology.EVENTS)
async def record_unsubscribe(event: RecipientUnsubscribed, runtime: HandlerRuntime) -> None:
    """A global unsubscribe leaves the address out of every future campaign; leaving one
    campaign is the sender's business, not audience's."""
    if event.scope != "all":
        return
    async with runtime.pool.acquire() as conn:
        await audience_repo.SuppressionRepository(conn).unsubscribe(
            comparable(event.email), event.reason, event.occurred_at
        )
