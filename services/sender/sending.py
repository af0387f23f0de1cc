"""Sending a batch: for each recipient, claim the delivery, send, record the outcome.

The ledger row is written (committed) before the provider is called and completed after, with
the outcome event in the same transaction. A redelivered batch finds its recipients claimed and
does not send them again. A transient failure gives the claim back and retries the batch later.
"""

from __future__ import annotations

from collections import OrderedDict

from opentelemetry.trace import SpanKind, Tracer

from services.sender import repository as sender_repo
from services.sender.accounts import SendingAccount, SendingAccounts
from services.sender.message import CompiledCampaign, build
from services.sender.transport import PermanentSendError, TransientSendError
from shared import outbox
from shared.contracts import (
    CampaignStarted,
    MessageFailed,
    MessageSent,
    MessageSkipped,
    Recipient,
    SendBatch,
    utc_now,
)
from shared.errors import RetryLater
from shared.personalisation import TemplateProblem
from shared.service import Runtime

_COMPILED_CAMPAIGNS = 64


class CompiledCampaigns:
    """Recently used campaigns, compiled once (or the reason they do not compile)."""

    def __init__(self) -> None:
        self._cache: OrderedDict[int, CompiledCampaign | TemplateProblem] = OrderedDict()

    def get(self, content: CampaignStarted) -> CompiledCampaign | TemplateProblem:
        """The compiled campaign, or the template problem that prevents it."""
        compiled = self._cache.pop(content.campaign_id, None)
        if compiled is None:
            try:
                compiled = CompiledCampaign.of(content)
            except TemplateProblem as problem:
                compiled = problem
        self._cache[content.campaign_id] = compiled
        while len(self._cache) > _COMPILED_CAMPAIGNS:
            self._cache.popitem(last=False)
        return compiled


async def send_batch(
    runtime: Runtime, accounts: SendingAccounts, campaigns: CompiledCampaigns, batch: SendBatch
) -> None:
    """Send every recipient of the batch that was not sent before."""
    account = accounts.get(batch.account_id)
    async with runtime.pool.acquire() as conn:
        content, cancelled = await sender_repo.CampaignRepository(conn).get(batch.campaign_id)
    if content is None:
        raise RetryLater(f"campaign {batch.campaign_id}: content not received yet")
    compiled = campaigns.get(content)
    for recipient in batch.recipients:
        await _deliver(runtime, account, batch, recipient, compiled, cancelled)


async def _deliver(
    runtime: Runtime,
    account: SendingAccount,
    batch: SendBatch,
    recipient: Recipient,
    compiled: CompiledCampaign | TemplateProblem,
    cancelled: bool,
) -> None:
    async with runtime.transaction() as conn:
        if not await sender_repo.DeliveryRepository(conn).claim(
            batch.campaign_id, recipient.recipient_id, recipient.email
        ):
            return
    if cancelled:
        await _finish(runtime, batch, recipient, "skipped", reason="campaign cancelled")
        return
    try:
        if isinstance(compiled, TemplateProblem):
            raise compiled
        mail = build(compiled, recipient, runtime.state["links"])
    except TemplateProblem as problem:
        await _finish(runtime, batch, recipient, "failed", reason=f"template error: {problem}")
        return
    except ValueError as problem:
        # An address no message can carry (a line break, no domain...). Left uncaught, the claim
        # stayed 'sending' for ever: the retried batch skipped it and the campaign never completed.
        await _finish(runtime, batch, recipient, "failed", reason=f"invalid message: {problem}")
        return
    await account.bucket.acquire()
    try:
        with _tracer(runtime).start_as_current_span(
            f"{account.config.transport} send",
            kind=SpanKind.CLIENT,
            attributes={"mailer.account_id": batch.account_id, "mailer.delivery": mail.message_id},
        ):
            provider_message_id = await account.transport.send(mail)
    except PermanentSendError as exc:
        await _finish(runtime, batch, recipient, "failed", reason=exc.reason)
    except TransientSendError as exc:
        async with runtime.transaction() as conn:
            await sender_repo.DeliveryRepository(conn).release(batch.campaign_id, recipient.recipient_id)
        raise RetryLater(exc.reason) from exc
    else:
        await _finish(runtime, batch, recipient, "sent", provider_message_id=provider_message_id)


def _tracer(runtime: Runtime) -> Tracer:
    return runtime.tracer_provider.get_tracer("mailer.sender")


async def _finish(
    runtime: Runtime,
    batch: SendBatch,
    recipient: Recipient,
    status: str,
    *,
    provider_message_id: str | None = None,
    reason: str | None = None,
) -> None:
    common = {
        "campaign_id": batch.campaign_id,
        "account_id": batch.account_id,
        "recipient_id": recipient.recipient_id,
        "email": recipient.email,
        "name": recipient.name,
    }
    event: MessageSent | MessageFailed | MessageSkipped
    if status == "sent":
        event = MessageSent(**common, provider_message_id=provider_message_id or "", sent_at=utc_now())
    elif status == "failed":
        event = MessageFailed(**common, reason=reason or "")
    else:
        event = MessageSkipped(**common, reason=reason or "")
    async with runtime.transaction() as conn:
        await sender_repo.DeliveryRepository(conn).finish(
            batch.campaign_id, recipient.recipient_id, status, provider_message_id, reason
        )
        await outbox.add_event(conn, event)
