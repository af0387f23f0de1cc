"""Campaign's consumers: resolution, failures and delivery outcomes update status and results."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from faststream.rabbit import RabbitRouter

from services.campaign import repository as campaign_repo
from shared.contracts import (
    AccountHeld,
    AccountPaused,
    AccountResumed,
    CampaignFailed,
    CampaignRecipientsResolved,
    DeliveryEvent,
    EngagementsRecorded,
    LinkClicked,
    MessageBounced,
    MessageComplained,
    MessageFailed,
    MessageIndeterminate,
    MessageOpened,
    MessageSent,
    MessageSkipped,
    RecipientUnsubscribed,
    UnsubscribeRequested,
    topology,
)
from shared.db import first_processing
from shared.errors import NotFound, RetryLater
from shared.outbox import add_event
from shared.service import HandlerRuntime

router = RabbitRouter()


@router.subscriber(topology.CAMPAIGN_RECIPIENTS_RESOLVED, topology.EVENTS)
async def record_resolution(event: CampaignRecipientsResolved, runtime: HandlerRuntime) -> None:
    """Audience queued the recipients: the campaign is sending (or done, if there are none)."""
    async with runtime.transaction() as conn:
        if not await first_processing(conn, event.event_id):
            return
        campaigns = campaign_repo.CampaignRepository(conn)
        await campaigns.set_recipients(event.campaign_id, event.included)
        await campaigns.complete_if_done(event.campaign_id)


@router.subscriber(topology.CAMPAIGN_CAMPAIGN_FAILED, topology.EVENTS)
async def record_failure(event: CampaignFailed, runtime: HandlerRuntime) -> None:
    """The campaign cannot be sent: show it failed, with the reason."""
    async with runtime.transaction() as conn:
        if await first_processing(conn, event.event_id):
            await campaign_repo.CampaignRepository(conn).fail(event.campaign_id, event.reason)


async def _record_outcome(
    runtime: HandlerRuntime,
    event: DeliveryEvent,
    status: str,
    *,
    sent_at: datetime | None = None,
    reason: str | None = None,
    provider_message_id: str | None = None,
) -> None:
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        recorded = await campaigns.record_outcome(
            event, status, sent_at=sent_at, reason=reason, provider_message_id=provider_message_id
        )
        if recorded:
            await campaigns.complete_if_done(event.campaign_id)


@router.subscriber(topology.CAMPAIGN_MESSAGE_SENT, topology.EVENTS)
async def record_sent(event: MessageSent, runtime: HandlerRuntime) -> None:
    """A recipient's message was accepted by the provider."""
    await _record_outcome(
        runtime, event, "sent", sent_at=event.sent_at, provider_message_id=event.provider_message_id
    )


@router.subscriber(topology.CAMPAIGN_MESSAGE_FAILED, topology.EVENTS)
async def record_failed(event: MessageFailed, runtime: HandlerRuntime) -> None:
    """A recipient's message was refused for good."""
    await _record_outcome(runtime, event, "failed", reason=event.reason)


@router.subscriber(topology.CAMPAIGN_MESSAGE_SKIPPED, topology.EVENTS)
async def record_skipped(event: MessageSkipped, runtime: HandlerRuntime) -> None:
    """A recipient's message was not sent on purpose."""
    await _record_outcome(runtime, event, "skipped", reason=event.reason)


@router.subscriber(topology.CAMPAIGN_MESSAGE_INDETERMINATE, topology.EVENTS)
async def record_indeterminate(event: MessageIndeterminate, runtime: HandlerRuntime) -> None:
    """The sender died during this recipient's SMTP transaction: the message may have left."""
    await _record_outcome(runtime, event, "indeterminate", reason=event.reason)


async def _record_engagements(
    runtime: HandlerRuntime, engagements: Sequence[MessageOpened | LinkClicked]
) -> None:
    """Keep opens and clicks in one transaction; each is applied once (by its event id)."""
    try:
        async with runtime.transaction() as conn:
            campaigns = campaign_repo.CampaignRepository(conn)
            for engagement in engagements:
                await campaigns.record_engagement(engagement)
        return
    except NotFound:
        pass
    # A person's engagement overtook its recipient's sent event (different queues): keep the
    # others now, each in a savepoint, and retry the message; the kept ones are then skipped.
    overtaken: list[NotFound] = []
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        for engagement in engagements:
            try:
                async with conn.transaction():
                    await campaigns.record_engagement(engagement)
            except NotFound as exc:
                overtaken.append(exc)
    if overtaken:
        raise RetryLater(f"{len(overtaken)} engagement(s) wait for their outcome: {overtaken[0]}")


@router.subscriber(topology.CAMPAIGN_MESSAGE_OPENED, topology.EVENTS)
async def record_open(event: MessageOpened, runtime: HandlerRuntime) -> None:
    """An open is kept and counted once; a person's open of a known recipient is its read date
    (the first one) and counts the recipient as read."""
    await _record_engagements(runtime, [event])


@router.subscriber(topology.CAMPAIGN_ACCOUNT_PAUSED, topology.EVENTS)
async def record_account_paused(event: AccountPaused, runtime: HandlerRuntime) -> None:
    """The account's senders stopped (bounce brake, provider refusal, operator): shown with why."""
    async with runtime.transaction() as conn:
        await campaign_repo.AccountRepository(conn).set_paused(
            event.account_id, True, event.reason, event.until, event.occurred_at
        )


@router.subscriber(topology.CAMPAIGN_ACCOUNT_RESUMED, topology.EVENTS)
async def record_account_resumed(event: AccountResumed, runtime: HandlerRuntime) -> None:
    """The account sends again."""
    async with runtime.transaction() as conn:
        await campaign_repo.AccountRepository(conn).set_paused(
            event.account_id, False, event.reason, None, event.occurred_at
        )


@router.subscriber(topology.CAMPAIGN_ACCOUNT_HELD, topology.EVENTS)
async def record_account_held(event: AccountHeld, runtime: HandlerRuntime) -> None:
    """The account waits for its quota or the provider, failing nothing: shown until when."""
    async with runtime.transaction() as conn:
        await campaign_repo.AccountRepository(conn).set_held(event.account_id, event.reason, event.until)


@router.subscriber(topology.CAMPAIGN_LINK_CLICKED, topology.EVENTS)
async def record_click(event: LinkClicked, runtime: HandlerRuntime) -> None:
    """A tracked link was followed: kept and counted once, on the link and, for a person, on the
    recipient (its first click makes it a unique clicker)."""
    await _record_engagements(runtime, [event])


@router.subscriber(topology.CAMPAIGN_ENGAGEMENTS_RECORDED, topology.EVENTS)
async def record_engagements(event: EngagementsRecorded, runtime: HandlerRuntime) -> None:
    """Opens and clicks published together by tracking: kept and counted as one by one, in one
    transaction for the batch; a batch delivered again applies nothing twice."""
    await _record_engagements(runtime, [*event.opens, *event.clicks])


@router.subscriber(topology.CAMPAIGN_MESSAGE_BOUNCED, topology.EVENTS)
async def record_bounce(event: MessageBounced, runtime: HandlerRuntime) -> None:
    """The provider bounced a recipient's message: shown on the result, counted once per recipient."""
    try:
        async with runtime.transaction() as conn:
            if await first_processing(conn, event.event_id):
                await campaign_repo.CampaignRepository(conn).record_bounce(event)
    except NotFound as exc:
        raise RetryLater(str(exc)) from exc


@router.subscriber(topology.CAMPAIGN_MESSAGE_COMPLAINED, topology.EVENTS)
async def record_complaint(event: MessageComplained, runtime: HandlerRuntime) -> None:
    """The recipient reported the message as spam: shown on the result, counted once per recipient.
    (bounce suppresses the address for every account; no unsubscribe is announced from here.)"""
    try:
        async with runtime.transaction() as conn:
            if await first_processing(conn, event.event_id):
                await campaign_repo.CampaignRepository(conn).record_complaint(event)
    except NotFound as exc:
        raise RetryLater(str(exc)) from exc


@router.subscriber(topology.CAMPAIGN_UNSUBSCRIBE_REQUESTED, topology.EVENTS)
async def record_unsubscribe(event: UnsubscribeRequested, runtime: HandlerRuntime) -> None:
    """A recipient unsubscribed through tracking: date it on the result and announce it with the
    address, which only campaign knows, so audience and sender honour it (once per scope)."""
    try:
        async with runtime.transaction() as conn:
            email = await campaign_repo.CampaignRepository(conn).record_unsubscribe(
                event.campaign_id, event.recipient_id, event.scope, event.reason, event.requested_at
            )
            if email is not None:
                await add_event(
                    conn,
                    RecipientUnsubscribed(
                        email=email,
                        scope=event.scope,
                        campaign_id=event.campaign_id,
                        recipient_id=event.recipient_id,
                        reason=event.reason,
                        occurred_at=event.requested_at,
                    ),
                )
    except NotFound as exc:
        # The request overtook the delivery outcome (different queues): retry once it is recorded.
        raise RetryLater(str(exc)) from exc
