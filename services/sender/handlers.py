"""Sender's consumers: account and campaign control events, campaign contents, the suppression
and unsubscribe lists, and the SendBatch handler that every account consumer runs.

Control events (an account configured, paused or resumed; a campaign paused, resumed or
cancelled) arrive twice on each replica that runs: on sender's durable queue (one replica takes
it; the state is written even while no replica runs) and on the replica's own control queue
(every replica applies it at once). Applying one is idempotent: write the database unless a newer
state is stored, then make this replica match what the database says.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage

from services.sender import repository as sender_repo
from services.sender import sending
from shared.contracts import (
    AccountConfigured,
    AccountPaused,
    AccountResumed,
    AddressSuppressed,
    AddressUnsuppressed,
    CampaignCancelled,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    Event,
    RecipientUnsubscribed,
    SendBatch,
    topology,
)
from shared.service import HandlerRuntime, Runtime

log = logging.getLogger(__name__)

router = RabbitRouter()

ControlEvent = (
    AccountConfigured | AccountPaused | AccountResumed | CampaignPaused | CampaignResumed | CampaignCancelled
)
_CONTROL_EVENTS: dict[str, type[Event]] = {
    event.routing_key: event
    for event in (
        AccountConfigured,
        AccountPaused,
        AccountResumed,
        CampaignPaused,
        CampaignResumed,
        CampaignCancelled,
    )
}


def _sender(runtime: Runtime) -> sending.Sender:
    sender: sending.Sender = runtime.state["sender"]
    return sender


async def apply_control(runtime: Runtime, event: ControlEvent) -> None:
    """Record a control event (unless a newer state is stored) and make this replica match."""
    sender = _sender(runtime)
    if isinstance(event, AccountConfigured):
        async with runtime.transaction() as conn:
            await sender_repo.AccountRepository(conn).save(event)
        await sender.accounts.sync(runtime, event.account_id)
    elif isinstance(event, AccountPaused | AccountResumed):
        async with runtime.transaction() as conn:
            await sender_repo.AccountRepository(conn).set_paused(
                event.account_id,
                isinstance(event, AccountPaused),
                event.reason,
                event.until if isinstance(event, AccountPaused) else None,
                event.occurred_at,
            )
        log.info("account pause event", extra={"account_id": event.account_id, "event": event.routing_key})
        await sender.accounts.sync(runtime, event.account_id)
    elif isinstance(event, CampaignPaused | CampaignResumed):
        async with runtime.transaction() as conn:
            campaigns = sender_repo.CampaignRepository(conn)
            await campaigns.set_paused(
                event.campaign_id, isinstance(event, CampaignPaused), event.occurred_at
            )
            state = await campaigns.lock_state(event.campaign_id)
        sender.control.set_campaign_paused(event.campaign_id, state.paused)
        if not state.paused:
            await _republish_parked(runtime, event.campaign_id)
    else:
        async with runtime.transaction() as conn:
            await sender_repo.CampaignRepository(conn).cancel(event.campaign_id)
        sender.control.cancel(event.campaign_id)
        # Batches set aside while it was paused come back, to be skipped.
        await _republish_parked(runtime, event.campaign_id)


async def _republish_parked(runtime: Runtime, campaign_id: int) -> None:
    """Put a campaign's parked batches back on their account's queue, with their priority.

    Published (and confirmed) before the rows are deleted: a crash in between publishes a batch
    twice, which the delivery ledger absorbs; never zero times.
    """
    async with runtime.transaction() as conn:
        campaigns = sender_repo.CampaignRepository(conn)
        state = await campaigns.lock_state(campaign_id)
        if state.paused and not state.cancelled:
            return
        parked = await campaigns.parked(campaign_id)
        for batch in parked:
            await runtime.broker.publish(
                batch.body,
                exchange=topology.SEND.name,
                routing_key=topology.account_routing_key(batch.account_id),
                priority=batch.priority,
                message_id=str(batch.batch_id),
                content_type="application/json",
                persist=True,
            )
        await campaigns.unpark([batch.batch_id for batch in parked])
    if parked:
        log.info("parked batches queued again", extra={"campaign_id": campaign_id, "batches": len(parked)})


def _control_event(body: dict[str, Any], message: RabbitMessage) -> ControlEvent | None:
    """The control event in a message, by its routing key (None for other events)."""
    event_type = _CONTROL_EVENTS.get(message.raw_message.routing_key or "")
    event: ControlEvent | None = None if event_type is None else event_type.model_validate(body)  # type: ignore[assignment]
    return event


async def apply_durable(body: dict[str, Any], message: RabbitMessage, runtime: HandlerRuntime) -> None:
    """Handler of sender's durable control queues: record and apply (retried on failure)."""
    event = _control_event(body, message)
    if event is not None:
        await apply_control(runtime, event)


# Configured, paused, resumed accounts; paused, resumed, cancelled campaigns: one handler each.
for _queue in (
    topology.SENDER_ACCOUNT_CONFIGURED,
    topology.SENDER_ACCOUNT_PAUSED,
    topology.SENDER_ACCOUNT_RESUMED,
    topology.SENDER_CAMPAIGN_PAUSED,
    topology.SENDER_CAMPAIGN_RESUMED,
    topology.SENDER_CAMPAIGN_CANCELLED,
):
    router.subscriber(_queue, topology.EVENTS)(apply_durable)


@router.subscriber(topology.SENDER_CAMPAIGN_STARTED, topology.EVENTS)
async def keep_campaign(event: CampaignStarted, runtime: HandlerRuntime) -> None:
    """Keep a started campaign's content for rendering its messages."""
    async with runtime.transaction() as conn:
        await sender_repo.CampaignRepository(conn).save(event)


@router.subscriber(topology.SENDER_ADDRESS_SUPPRESSED, topology.EVENTS)
async def suppress_address(event: AddressSuppressed, runtime: HandlerRuntime) -> None:
    """No account sends to this address any more: checked before every message."""
    async with runtime.transaction() as conn:
        await sender_repo.AddressRepository(conn).suppress(event.email, event.reason, event.occurred_at)


@router.subscriber(topology.SENDER_ADDRESS_UNSUPPRESSED, topology.EVENTS)
async def unsuppress_address(event: AddressUnsuppressed, runtime: HandlerRuntime) -> None:
    """An admin removed the address from the suppression list."""
    async with runtime.transaction() as conn:
        await sender_repo.AddressRepository(conn).unsuppress(event.email, event.occurred_at)


@router.subscriber(topology.SENDER_RECIPIENT_UNSUBSCRIBED, topology.EVENTS)
async def unsubscribe_address(event: RecipientUnsubscribed, runtime: HandlerRuntime) -> None:
    """A recipient left every future campaign (leaving one campaign changes nothing here: each
    recipient gets one message per campaign)."""
    if event.scope == "all":
        async with runtime.transaction() as conn:
            await sender_repo.AddressRepository(conn).unsubscribe(event.email, event.occurred_at)


async def send_batch(batch: SendBatch, message: RabbitMessage, runtime: HandlerRuntime) -> None:
    """Handler of every account queue (subscribed at runtime by SendingAccounts)."""
    await sending.send_batch(runtime, _sender(runtime), batch, message)


async def apply_broadcast(body: dict[str, Any], message: RabbitMessage, runtime: HandlerRuntime) -> None:
    """Handler of this replica's control queues: apply what concerns sending at once.

    Never retried nor dead-lettered (the queue is this replica's alone and the durable queue
    carries the same event): a failure is logged and the durable copy applies it.
    """
    try:
        event = _control_event(body, message)
        if event is not None:
            await apply_control(runtime, event)
    except Exception:
        log.warning("control event not applied from the control queue", exc_info=True)


async def start(runtime: Runtime) -> None:
    """When the broker is up: listen to control events, then serve every known account as the
    database says (paused accounts stay stopped)."""
    broker: RabbitBroker = runtime.broker
    sender = _sender(runtime)
    subscribers = []
    for pattern in topology.SENDER_CONTROL_PATTERNS:
        subscriber = broker.subscriber(
            topology.sender_control_queue(sender.instance, pattern), topology.EVENTS, persistent=False
        )
        subscriber(apply_broadcast)
        await subscriber.start()
        subscribers.append(subscriber)
    # The broker keeps dynamic subscribers weakly.
    runtime.state["control_subscribers"] = subscribers
    async with runtime.pool.acquire() as conn:
        halted = await sender_repo.CampaignRepository(conn).halted()
        configs = await sender_repo.AccountRepository(conn).all()
    sender.control.load(
        {s.campaign_id for s in halted if s.paused and s.campaign_id is not None},
        {s.campaign_id for s in halted if s.cancelled and s.campaign_id is not None},
    )
    for config, _ in configs:
        await sender.accounts.sync(runtime, config.account_id)
