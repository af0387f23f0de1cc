"""Audience's consumer: a started campaign's groups become its staged, numbered recipients."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter

from services.audience import repository as audience_repo
from services.audience.dispatcher import Dispatcher
from shared import outbox
from shared.contracts import CampaignFailed, CampaignRecipientsResolved, CampaignStarted, topology
from shared.db import first_processing
from shared.service import HandlerRuntime
from shared.telemetry import current_trace_headers

router = RabbitRouter()


@router.subscriber(topology.AUDIENCE_CAMPAIGN_STARTED, topology.EVENTS)
async def resolve_campaign(event: CampaignStarted, runtime: HandlerRuntime) -> None:
    """Resolve every group of the campaign in one transaction, then let the dispatcher queue it.

    A missing group fails the campaign before anything is queued.
    """
    async with runtime.transaction() as conn:
        resolutions = audience_repo.ResolutionRepository(conn)
        if not await first_processing(conn, event.event_id) or await resolutions.exists(event.campaign_id):
            return
        missing = await audience_repo.GroupRepository(conn).missing(event.group_ids)
        if missing:
            reason = f"group(s) not found: {', '.join(map(str, missing))}"
            await resolutions.record_failure(event.campaign_id, event.account_id, event.priority, reason)
            await outbox.add_event(conn, CampaignFailed(campaign_id=event.campaign_id, reason=reason))
            return
        included, duplicates = await resolutions.resolve(
            event.campaign_id, event.account_id, event.priority, event.group_ids, current_trace_headers()
        )
        await outbox.add_event(
            conn,
            CampaignRecipientsResolved(
                campaign_id=event.campaign_id,
                account_id=event.account_id,
                included=included,
                invalid=0,
                duplicate=duplicates,
                suppressed=0,
                unsubscribed=0,
            ),
        )
    dispatcher: Dispatcher = runtime.state["dispatcher"]
    dispatcher.notify()
