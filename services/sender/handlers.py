"""Sender's consumers: account configurations, campaign contents and cancellations, and the
SendBatch handler that every account consumer runs."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter

from services.sender import repository as sender_repo
from services.sender import sending
from services.sender.accounts import SendingAccounts
from shared.contracts import AccountConfigured, CampaignCancelled, CampaignStarted, SendBatch, topology
from shared.service import HandlerRuntime, Runtime

router = RabbitRouter()


def _accounts(runtime: Runtime) -> SendingAccounts:
    accounts: SendingAccounts = runtime.state["accounts"]
    return accounts


@router.subscriber(topology.SENDER_ACCOUNT_CONFIGURED, topology.EVENTS)
async def configure_account(event: AccountConfigured, runtime: HandlerRuntime) -> None:
    """Keep the account's configuration and (re)start or stop its consumer."""
    async with runtime.transaction() as conn:
        current = await sender_repo.AccountRepository(conn).save(event)
    if current:
        await _accounts(runtime).configure(runtime.broker, event)


@router.subscriber(topology.SENDER_CAMPAIGN_STARTED, topology.EVENTS)
async def keep_campaign(event: CampaignStarted, runtime: HandlerRuntime) -> None:
    """Keep a started campaign's content for rendering its messages."""
    async with runtime.transaction() as conn:
        await sender_repo.CampaignRepository(conn).save(event)


@router.subscriber(topology.SENDER_CAMPAIGN_CANCELLED, topology.EVENTS)
async def cancel_campaign(event: CampaignCancelled, runtime: HandlerRuntime) -> None:
    """Remember the cancellation: recipients not sent yet are skipped."""
    async with runtime.transaction() as conn:
        await sender_repo.CampaignRepository(conn).cancel(event.campaign_id)


async def send_batch(batch: SendBatch, runtime: HandlerRuntime) -> None:
    """Handler of every account queue (subscribed at runtime by SendingAccounts)."""
    await sending.send_batch(runtime, _accounts(runtime), runtime.state["campaigns"], batch)


async def start_known_accounts(runtime: Runtime) -> None:
    """On start, serve every account configured before."""
    async with runtime.pool.acquire() as conn:
        configs = await sender_repo.AccountRepository(conn).all()
    for config in configs:
        await _accounts(runtime).configure(runtime.broker, config)
