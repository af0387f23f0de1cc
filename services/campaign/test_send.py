"""Test sends ("Testar envio"): one message from a sender address through its account, with the
provider's answers shown.

Campaign holds no transport (sending is the sender service's job), so it asks a sender replica
over RabbitMQ request/reply (`sender.test-send`, direct reply-to) and waits for the outcome.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, status

from services.campaign import repository as campaign_repo
from services.campaign.api import _account_event
from services.campaign.models import Account
from shared.contracts import SenderIdentity, TestSendOutcome, TestSendRequested, topology
from shared.service import Runtime


class TestSendOut(TestSendOutcome):
    """The outcome of a test send, with where it went from and to."""

    __test__ = False

    sender: str
    account: str
    to: str


async def from_sender(runtime: Runtime, sender_address_id: int, to: str) -> TestSendOut:
    """Send a test from the sender address; 503 when no sender replica answers in time."""
    async with runtime.pool.acquire() as conn:
        sender = await campaign_repo.SenderAddressRepository(conn).get(sender_address_id)
        account = await campaign_repo.AccountRepository(conn).get(sender.account_id)
    identity = SenderIdentity(name=sender.name, email=sender.email, reply_to=sender.reply_to)
    return await _ask(runtime, account, identity, to)


async def from_account(runtime: Runtime, account_id: int, from_address: str, to: str) -> TestSendOut:
    """Send a test through the account from any address (to try an account before it has
    sender addresses, e.g. SMTP credentials just entered)."""
    async with runtime.pool.acquire() as conn:
        account = await campaign_repo.AccountRepository(conn).get(account_id)
    return await _ask(runtime, account, SenderIdentity(name=account.name, email=from_address), to)


async def _ask(runtime: Runtime, account: Account, sender: SenderIdentity, to: str) -> TestSendOut:
    request = TestSendRequested(
        account=_account_event(account),
        sender=sender,
        to=to,
        subject=f"Teste de envio: {sender.name} <{sender.email}>",
        text=(
            f"Mensagem de teste enviada pela conta {account.name!r} ({account.transport}) "
            f"com o remetente {sender.email}.\n"
        ),
    )
    try:
        async with asyncio.timeout(topology.TEST_SEND_TIMEOUT_SECONDS + 5):
            answer = await runtime.broker.request(
                request.model_dump_json(),
                queue=topology.SENDER_TEST_SEND,
                content_type="application/json",
                timeout=topology.TEST_SEND_TIMEOUT_SECONDS,
            )
    except Exception as exc:  # timeout, no queue (no sender running), broker away: all a 503
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"no sender answered the test send: {exc or 'timeout'}",
        ) from exc
    outcome = TestSendOutcome.model_validate_json(answer.body)
    return TestSendOut(**outcome.model_dump(), sender=str(sender.email), account=account.name, to=to)
