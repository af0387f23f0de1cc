"""Sending a batch: for each recipient, claim the delivery, send, record the outcome.

The ledger row is written (committed) before the provider is called and completed after, with
the outcome event in the same transaction. A redelivered batch finds its recipients claimed and
does not send them again. A claim left by a process that died during the send is reported
`indeterminate` (the message may have left) and not sent again, unless the sender is set to
resend. Up to `max_connections` recipients of a batch are in flight at once.

Before each message the batch checks that nothing stopped it: the account paused or held, the
campaign paused, a transient failure, or its broker channel gone. What it did not send then goes
back: to the queue (account stopped), aside until resume (campaign paused), or to a retry tier.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faststream.exceptions import NackMessage
from faststream.rabbit.message import RabbitMessage
from opentelemetry.trace import SpanKind, Tracer

from services.sender import metrics as sender_metrics
from services.sender import repository as sender_repo
from services.sender.accounts import SendingAccount, SendingAccounts
from services.sender.control import Control, Halt, RunningBatch
from services.sender.ledger import Ledger, Outcome
from services.sender.message import CompiledCampaign, build
from services.sender.transport import (
    AccountRefusedError,
    IndeterminateSendError,
    OutgoingMail,
    PermanentSendError,
    SendError,
    ThrottledError,
)
from shared import outbox
from shared.contracts import (
    AccountPaused,
    CampaignStarted,
    MessageFailed,
    MessageIndeterminate,
    MessageSent,
    MessageSkipped,
    Recipient,
    SendBatch,
    utc_now,
)
from shared.errors import RetryLater
from shared.files import FileStore
from shared.personalisation import TemplateProblem
from shared.service import Runtime

log = logging.getLogger(__name__)

# Compiled campaigns hold their attachments' bytes: a few recent ones are enough, since an
# account sends one campaign at a time.
_COMPILED_CAMPAIGNS = 16
INDETERMINATE_REASON = "the sender stopped during the SMTP transaction: the message may have been delivered"


class CompiledCampaigns:
    """Recently used campaigns, compiled once with their files (or the reason they do not compile)."""

    def __init__(self, files: FileStore) -> None:
        self._files = files
        self._cache: OrderedDict[int, CompiledCampaign | TemplateProblem] = OrderedDict()

    async def get(self, content: CampaignStarted) -> CompiledCampaign | TemplateProblem:
        """The compiled campaign, or the template problem (a missing file too) that prevents it.

        The file store being unreachable is not cached: the batch is retried later.
        """
        compiled = self._cache.pop(content.campaign_id, None)
        if compiled is None:
            try:
                compiled = await CompiledCampaign.load(content, self._files)
            except TemplateProblem as problem:
                compiled = problem
            except Exception as exc:
                raise RetryLater(f"campaign {content.campaign_id}: files unavailable: {exc}") from exc
        self._cache[content.campaign_id] = compiled
        while len(self._cache) > _COMPILED_CAMPAIGNS:
            self._cache.popitem(last=False)
        return compiled


@dataclass(frozen=True)
class Sender:
    """What sending needs besides the runtime."""

    accounts: SendingAccounts
    campaigns: CompiledCampaigns
    control: Control
    instance: str
    resend_indeterminate: bool
    # Made once: getting a tracer from the provider costs ~70 µs, a tenth of a message's CPU.
    tracer: Tracer


async def send_batch(runtime: Runtime, sender: Sender, batch: SendBatch, message: RabbitMessage) -> None:
    """Send every recipient of the batch that was not sent before (see the module docstring)."""
    account = sender.accounts.get(batch.account_id)
    async with account.sending:
        await _send_batch(runtime, sender, account, batch, message)


async def _send_batch(
    runtime: Runtime, sender: Sender, account: SendingAccount, batch: SendBatch, message: RabbitMessage
) -> None:
    if account.halted is not None:
        # Delivered before the consumer stopped: back to the queue for when the account resumes.
        raise NackMessage()
    async with runtime.pool.acquire() as conn:
        state = await sender_repo.CampaignRepository(conn).get(batch.campaign_id)
        blocked = await sender_repo.AddressRepository(conn).blocked(batch.recipients)
    if state.content is None:
        raise RetryLater(f"campaign {batch.campaign_id}: content not received yet")
    if state.cancelled:
        # The database is the state of record: this replica may not have heard the event yet.
        sender.control.cancel(batch.campaign_id)
    if (state.paused or sender.control.is_paused(batch.campaign_id)) and await _park(runtime, batch, message):
        return
    compiled = await sender.campaigns.get(state.content)
    running = sender.control.begin(
        batch.campaign_id, batch.account_id, (r.recipient_id for r in batch.recipients)
    )
    try:
        work = _BatchWork(runtime, sender, account, batch, compiled, blocked, running)
        work.channel_closed = lambda: bool(message.raw_message.channel.is_closed)
        await work.run()
    finally:
        sender.control.end(running)
    if running.reason is None:
        return
    if running.reason is Halt.CAMPAIGN_PAUSED and await _park(runtime, batch, message):
        return
    if running.reason is Halt.RETRY:
        raise RetryLater(work.retry_reason or "transient failure")
    # Account paused or held, campaign resumed meanwhile, channel gone: the queue keeps it.
    raise NackMessage()


async def _park(runtime: Runtime, batch: SendBatch, message: RabbitMessage) -> bool:
    """Set the paused campaign's batch aside (acknowledged); False if it was resumed meanwhile."""
    async with runtime.transaction() as conn:
        campaigns = sender_repo.CampaignRepository(conn)
        if not (await campaigns.lock_state(batch.campaign_id)).paused:
            return False
        await campaigns.park(
            batch.event_id,
            batch.campaign_id,
            batch.account_id,
            message.raw_message.priority or 0,
            message.body,
        )
    log.info("batch set aside: campaign paused", extra={"campaign_id": batch.campaign_id})
    return True


class _BatchWork:
    """The recipients of one batch, sent by up to `max_connections` workers."""

    def __init__(
        self,
        runtime: Runtime,
        sender: Sender,
        account: SendingAccount,
        batch: SendBatch,
        compiled: CompiledCampaign | TemplateProblem,
        blocked: dict[str, str],
        running: RunningBatch,
    ) -> None:
        self._runtime = runtime
        self._sender = sender
        self._account = account
        self._batch = batch
        self._compiled = compiled
        self._blocked = blocked
        self._running = running
        self._pending = iter(batch.recipients)
        self._seen: set[int] = set()
        self._ledger = Ledger(runtime, batch, sender.instance)
        self.retry_reason: str | None = None
        # Once the channel is gone the batch goes back to the queue, to this replica or another:
        # sending on would race the one that gets it.
        self.channel_closed: Callable[[], bool] = lambda: False

    async def run(self) -> None:
        async with self._runtime.pool.acquire() as conn:
            self._seen = await sender_repo.DeliveryRepository(conn).seen(
                self._batch.campaign_id, [r.recipient_id for r in self._batch.recipients]
            )
        workers = min(self._account.config.max_connections, len(self._batch.recipients))
        await asyncio.gather(*(self._work() for _ in range(workers)))

    async def _work(self) -> None:
        while self._running.reason is None:
            recipient = next(self._pending, None)
            if recipient is None:
                return
            await self._deliver(recipient)

    def _stopped(self) -> bool:
        if self._running.reason is None and self._sender.control.is_paused(self._batch.campaign_id):
            self._running.halt(Halt.CAMPAIGN_PAUSED)
        if self._running.reason is None and self.channel_closed():
            self._running.halt(Halt.CONNECTION_LOST)
        return self._running.reason is not None

    async def _deliver(self, recipient: Recipient) -> None:
        # A recipient seen before (a redelivered batch) is settled by its claim first: no slot is
        # spent on what was sent. A new one is claimed only once its slot has come, so a crash
        # leaves in doubt only what was truly between claim and outcome.
        claimed = False
        if recipient.recipient_id in self._seen:
            if not await self._claim(recipient):
                return
            claimed = True
        prepared = self._prepare(recipient)
        if not isinstance(prepared, OutgoingMail):
            if claimed or await self._claim(recipient):
                await self._finish(recipient, prepared[0], reason=prepared[1])
            return
        while True:
            if not await self._slot():
                if claimed:
                    await self._release(recipient)
                return
            if not claimed:
                if not await self._claim(recipient):
                    self._account.pace.release()
                    return
                claimed = True
                if self._stopped():
                    # Stopped while claiming: nothing has left yet, give it all back.
                    self._account.pace.release()
                    await self._release(recipient)
                    return
            try:
                with self._sender.tracer.start_as_current_span(
                    f"{self._account.config.transport} send",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "mailer.account_id": self._batch.account_id,
                        "mailer.delivery": prepared.message_id,
                    },
                ):
                    provider_message_id = await self._account.transport.send(prepared)
            except ThrottledError as exc:
                # Account-wide: the pace holds every worker of the account; this one tries again
                # after the hold, its claim given back meanwhile (nothing is in doubt while it waits).
                log.warning("provider throttles the account", extra={"account_id": self._batch.account_id})
                self._account.pace.release()
                self._account.pace.throttled(exc.daily_quota_exceeded)
                await self._release(recipient)
                claimed = False
                continue
            except SendError as exc:
                if isinstance(exc, IndeterminateSendError):
                    # It may have left: count it against the quota, the safe side.
                    self._account.pace.record_sent()
                else:
                    self._account.pace.release()
                await self._not_sent(recipient, exc)
                return
            self._account.pace.record_sent()
            await self._finish(recipient, "sent", provider_message_id=provider_message_id)
            return

    def _prepare(self, recipient: Recipient) -> OutgoingMail | tuple[str, str]:
        """The message to send, or the outcome (status, reason) that needs no sending."""
        if self._sender.control.is_cancelled(self._batch.campaign_id):
            return "skipped", "campaign cancelled"
        block = self._blocked.get(recipient.email.lower())
        if block is not None:
            return "skipped", block
        try:
            if isinstance(self._compiled, TemplateProblem):
                raise self._compiled
            return build(self._compiled, recipient, self._runtime.state["links"])
        except TemplateProblem as problem:
            return "failed", f"template error: {problem}"
        except ValueError as problem:
            # An address no message can carry (a line break, no domain...).
            return "failed", f"invalid message: {problem}"

    async def _not_sent(self, recipient: Recipient, exc: SendError) -> None:
        """Record why the provider did not take the message, and stop the batch if it must."""
        if isinstance(exc, AccountRefusedError):
            # Stop the other workers first: none starts a send while this claim is given back.
            self._running.halt(Halt.ACCOUNT_PAUSED)
            await self._release(recipient)
            await self._refused(exc.reason)
        elif isinstance(exc, IndeterminateSendError):
            await self._finish(recipient, "indeterminate", reason=exc.reason)
        elif isinstance(exc, PermanentSendError):
            await self._finish(recipient, "failed", reason=exc.reason)
        else:
            self.retry_reason = exc.reason
            self._running.halt(Halt.RETRY)
            await self._release(recipient)

    async def _slot(self) -> bool:
        """Wait for the account's next send slot; False if the batch was stopped meanwhile (the
        check comes after the wait: a pause during it stops this message)."""
        if self._stopped():
            return False
        acquire = asyncio.ensure_future(self._account.pace.acquire())
        stopped = asyncio.ensure_future(self._running.stopped.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (acquire, stopped):
            task.cancel()
        got_slot = acquire.done() and not acquire.cancelled()
        if got_slot and acquire.exception() is not None:
            raise acquire.exception()  # type: ignore[misc]
        if got_slot and self._stopped():
            self._account.pace.release()
            return False
        return got_slot

    async def _claim(self, recipient: Recipient) -> bool:
        """True if this process may send to the recipient now."""
        batch, instance = self._batch, self._sender.instance
        claim = await self._ledger.claim(recipient)
        if claim.won:
            return True
        if claim.status != "sending":
            return False
        if claim.claimed_by == instance and self._sender.control.sending_elsewhere(
            self._running, recipient.recipient_id
        ):
            # In flight in this very process (a batch delivered twice at once).
            return False
        # Otherwise a claim of a process that is gone, or of an attempt of this one that failed
        # half-way (database or broker away): its send may or may not have happened.
        if self._sender.resend_indeterminate:
            async with self._runtime.transaction() as conn:
                return await sender_repo.DeliveryRepository(conn).take_over(
                    batch.campaign_id, recipient.recipient_id, claim.claimed_by, instance
                )
        await self._finish(recipient, "indeterminate", reason=INDETERMINATE_REASON)
        return False

    async def _release(self, recipient: Recipient) -> None:
        """Give back a claim whose send did not happen, so a later attempt sends it."""
        async with self._runtime.transaction() as conn:
            await sender_repo.DeliveryRepository(conn).release(
                self._batch.campaign_id, recipient.recipient_id
            )

    async def _refused(self, reply: str) -> None:
        """The provider refuses the account itself (authentication, identity, sending paused):
        not the recipients' fault. Pause the account here at once and tell everyone."""
        account_id = self._batch.account_id
        log.error(
            "provider refuses the account: pausing it", extra={"account_id": account_id, "reply": reply}
        )
        async with self._runtime.transaction() as conn:
            await outbox.add_event(
                conn,
                AccountPaused(account_id=account_id, reason=f"provider refused: {reply}", source="sender"),
            )
        self._running.halt(Halt.ACCOUNT_PAUSED)
        await self._sender.accounts.set_paused(account_id, True)

    async def _finish(
        self,
        recipient: Recipient,
        status: str,
        *,
        provider_message_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        batch = self._batch
        sender_metrics.count_outcome(self._runtime, batch.account_id, status)
        common: dict[str, Any] = {
            "campaign_id": batch.campaign_id,
            "account_id": batch.account_id,
            "recipient_id": recipient.recipient_id,
            "email": recipient.email,
            "name": recipient.name,
        }
        event: MessageSent | MessageFailed | MessageSkipped | MessageIndeterminate
        if status == "sent":
            event = MessageSent(**common, provider_message_id=provider_message_id or "", sent_at=utc_now())
        elif status == "failed":
            event = MessageFailed(**common, reason=reason or "")
        elif status == "indeterminate":
            event = MessageIndeterminate(**common, reason=reason or "")
        else:
            event = MessageSkipped(**common, reason=reason or "")
        # Not finished (False): another process judged it indeterminate meanwhile, and reported it.
        await self._ledger.finish(Outcome(recipient, status, provider_message_id, reason, event))
