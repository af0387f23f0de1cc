"""Sending a batch: for each recipient, claim the delivery, send, record the outcome.

The ledger row is written (committed) before the provider is called and completed after, with
the outcome event in the same statement (see `ledger`); the batch is acknowledged once all its
outcomes are written. A redelivered batch finds its recipients claimed and does not send them
again. A claim left by a process that died during the send is reported `indeterminate` (the
message may have left) and not sent again, unless the sender is set to resend. Up to
`max_connections` recipients of a batch are sent at once, and as many more claimed, ready to go.

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
from services.sender.ledger import Ledger, LedgerWriter, Outcome
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
from shared.telemetry import traces

log = logging.getLogger(__name__)

# Compiled campaigns hold their attachments' bytes: a few recent ones are enough, since an
# account sends one campaign at a time.
_COMPILED_CAMPAIGNS = 16
# Above this rate per connection (a message every 20 ms or less on each), the commit of a claim
# made only when a send ends would keep the connection idle for a noticeable share of its time.
PIPELINED_RATE_PER_CONNECTION = 50.0
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


def _ledger_writer(runtime: Runtime, sender: Sender) -> LedgerWriter:
    """The process's ledger writer, made on first use (it needs the runtime's pool)."""
    writer: LedgerWriter | None = runtime.state.get("ledger")
    if writer is None:
        writer = runtime.state["ledger"] = LedgerWriter(runtime, sender.instance)
    return writer


async def send_batch(runtime: Runtime, sender: Sender, batch: SendBatch, message: RabbitMessage) -> None:
    """Send every recipient of the batch that was not sent before (see the module docstring)."""
    account = sender.accounts.get(batch.account_id)
    await account.sending.acquire()
    held = True

    def let_next_batch_go() -> None:
        nonlocal held
        if held:
            held = False
            account.sending.release()

    try:
        await _send_batch(runtime, sender, account, batch, message, let_next_batch_go)
    finally:
        let_next_batch_go()


async def _send_batch(
    runtime: Runtime,
    sender: Sender,
    account: SendingAccount,
    batch: SendBatch,
    message: RabbitMessage,
    sends_done: Callable[[], None],
) -> None:
    if account.halted is not None:
        # Delivered before the consumer stopped: back to the queue for when the account resumes.
        raise NackMessage()
    async with runtime.pool.acquire() as conn:
        known = await sender_repo.batch_state(conn, batch.campaign_id, batch.recipients)
    state, blocked, seen = known.campaign, known.blocked, known.seen
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
        work = _BatchWork(runtime, sender, account, batch, compiled, blocked, seen, running)
        work.channel_closed = lambda: bool(message.raw_message.channel.is_closed)
        work.sends_done = sends_done
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


@dataclass(frozen=True)
class _Job:
    """A recipient handed to the senders: the message (or the outcome that needs no sending) and
    the claim asked for it (None: a recipient seen before, claimed when its turn comes)."""

    recipient: Recipient
    prepared: OutgoingMail | tuple[str, str] | None
    claim: asyncio.Future[sender_repo.Claim] | None


class _BatchWork:
    """The recipients of one batch, sent on up to `max_connections` connections at once.

    One producer takes the recipients in order: it builds each message, waits for its send slot
    and asks for its claim, then hands it to the senders (one per connection), which wait for the
    claim to be committed and send. The senders check for a reason to stop before each message;
    the producer, before taking the next recipient and after each slot.

    A crash leaves in doubt what was claimed and not completed. For most accounts that is at most
    one send per connection: the next claim is asked only when a send ends. An account fast
    enough that a claim's commit would keep its connections idle (more than
    `PIPELINED_RATE_PER_CONNECTION` messages/s per connection) claims up to one message per
    connection ahead, so twice as many may be in doubt.
    """

    def __init__(
        self,
        runtime: Runtime,
        sender: Sender,
        account: SendingAccount,
        batch: SendBatch,
        compiled: CompiledCampaign | TemplateProblem,
        blocked: dict[str, str],
        seen: set[int],
        running: RunningBatch,
    ) -> None:
        self._runtime = runtime
        self._sender = sender
        self._account = account
        self._batch = batch
        self._compiled = compiled
        self._blocked = blocked
        # Recipients with a delivery row already (a redelivered batch).
        self._seen = seen
        self._running = running
        self._ledger = Ledger(_ledger_writer(runtime, sender), batch)
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        config = account.config
        ahead = (
            config.max_connections
            if config.rate_per_second > PIPELINED_RATE_PER_CONNECTION * config.max_connections
            else 0
        )
        # Messages claimed and not completed (each holds one until its send ends).
        self._claimable = asyncio.Semaphore(config.max_connections + ahead)
        self._error: Exception | None = None
        # Without an exporter nothing is sampled: no span is made per message only to be dropped.
        self._traced = traces(runtime.tracer_provider)
        self._span_name = f"{account.config.transport} send"
        self.retry_reason: str | None = None
        # Once the channel is gone the batch goes back to the queue, to this replica or another:
        # sending on would race the one that gets it.
        self.channel_closed: Callable[[], bool] = lambda: False
        # Called once no send of the batch is in flight or to come.
        self.sends_done: Callable[[], None] = lambda: None

    async def run(self) -> None:
        senders = min(self._account.config.max_connections, len(self._batch.recipients))
        await asyncio.gather(self._produce(senders), *(self._send_jobs() for _ in range(senders)))
        if self._running.reason is None:
            # Every send has ended: the account's next batch may start while these outcomes
            # are written. A batch stopped half-way keeps the account until it is put back.
            self.sends_done()
        # Acknowledged only once every outcome is in the ledger (and its event in the outbox).
        await self._ledger.settled()
        if self._error is not None:
            raise self._error

    def _failed(self, exc: Exception) -> None:
        """Keep the first error, and stop the batch before its next message."""
        if self._error is None:
            self._error = exc
        self._running.halt(Halt.RETRY)

    async def _produce(self, senders: int) -> None:
        try:
            for recipient in self._batch.recipients:
                if self._stopped():
                    return
                if recipient.recipient_id in self._seen:
                    self._jobs.put_nowait(_Job(recipient, None, None))
                    continue
                prepared = self._prepare(recipient)
                if isinstance(prepared, OutgoingMail):
                    await self._claimable.acquire()
                    if not await self._slot():
                        self._claimable.release()
                        return
                self._jobs.put_nowait(_Job(recipient, prepared, self._ledger.claim(recipient)))
        except Exception as exc:
            self._failed(exc)
        finally:
            for _ in range(senders):
                self._jobs.put_nowait(None)

    async def _send_jobs(self) -> None:
        while (job := await self._jobs.get()) is not None:
            try:
                await self._deliver(job)
            except Exception as exc:
                # The jobs still queued are given back: their claims stay in no doubt.
                self._failed(exc)
            finally:
                if isinstance(job.prepared, OutgoingMail):
                    self._claimable.release()

    def _stopped(self) -> bool:
        if self._running.reason is None and self._sender.control.is_paused(self._batch.campaign_id):
            self._running.halt(Halt.CAMPAIGN_PAUSED)
        if self._running.reason is None and self.channel_closed():
            self._running.halt(Halt.CONNECTION_LOST)
        return self._running.reason is not None

    async def _deliver(self, job: _Job) -> None:
        recipient, prepared = job.recipient, job.prepared
        pace = self._account.pace
        if job.claim is None:
            # Seen before (a redelivered batch): settled by its claim first, so that no slot is
            # spent on what was sent.
            if self._stopped() or not await self._claim(recipient):
                return
            prepared = self._prepare(recipient)
            if isinstance(prepared, OutgoingMail) and not await self._slot():
                await self._release(recipient)
                return
        elif not await self._claim(recipient, job.claim):
            if isinstance(prepared, OutgoingMail):
                pace.release()
            return
        assert prepared is not None
        if not isinstance(prepared, OutgoingMail):
            self._finish(recipient, prepared[0], reason=prepared[1])
            return
        while True:
            # Checked again with the claim in hand: a pause, a refusal or a throttle of the
            # account may have come while it was written. Nothing has left yet: all given back.
            if self._stopped() or pace.held():
                pace.release()
                await self._release(recipient)
                # A throttle's hold is waited for in _slot, then the recipient claimed again.
                if not await self._slot():
                    return
                if not await self._claim(recipient):
                    pace.release()
                    return
                continue
            if await self._send(recipient, prepared):
                return
            # Throttled: the claim was given back; wait for the hold, then claim again.
            if not await self._slot():
                return
            if not await self._claim(recipient):
                pace.release()
                return

    async def _send(self, recipient: Recipient, mail: OutgoingMail) -> bool:
        """Send a claimed message and record its outcome; False if the provider throttled the
        account (the claim given back, to try again after the hold)."""
        pace = self._account.pace
        try:
            if self._traced:
                with self._sender.tracer.start_as_current_span(
                    self._span_name,
                    kind=SpanKind.CLIENT,
                    attributes={
                        "mailer.account_id": self._batch.account_id,
                        "mailer.delivery": mail.message_id,
                    },
                ):
                    provider_message_id = await self._account.transport.send(mail)
            else:
                provider_message_id = await self._account.transport.send(mail)
        except ThrottledError as exc:
            # Account-wide: the pace holds every send of the account; this one tries again
            # after the hold, its claim given back meanwhile (nothing is in doubt while it waits).
            log.warning("provider throttles the account", extra={"account_id": self._batch.account_id})
            pace.release()
            pace.throttled(exc.daily_quota_exceeded)
            await self._release(recipient)
            return False
        except SendError as exc:
            if isinstance(exc, IndeterminateSendError):
                # It may have left: count it against the quota, the safe side.
                pace.record_sent()
            else:
                pace.release()
            await self._not_sent(recipient, exc)
            return True
        pace.record_sent()
        self._finish(recipient, "sent", provider_message_id=provider_message_id)
        return True

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
            self._finish(recipient, "indeterminate", reason=exc.reason)
        elif isinstance(exc, PermanentSendError):
            self._finish(recipient, "failed", reason=exc.reason)
        else:
            self.retry_reason = exc.reason
            self._running.halt(Halt.RETRY)
            await self._release(recipient)

    async def _slot(self) -> bool:
        """Wait for the account's next send slot; False if the batch was stopped meanwhile (the
        check comes after the wait: a pause during it stops this message)."""
        if self._stopped():
            return False
        if self._account.pace.try_acquire():
            # A slot free now (an account sending below its rate): nothing to wait for.
            return True
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

    async def _claim(
        self, recipient: Recipient, asked: asyncio.Future[sender_repo.Claim] | None = None
    ) -> bool:
        """True if this process may send to the recipient now (`asked`: its claim, asked before)."""
        batch, instance = self._batch, self._sender.instance
        claim = await (asked or self._ledger.claim(recipient))
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
        self._finish(recipient, "indeterminate", reason=INDETERMINATE_REASON)
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

    def _finish(
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
        # Written with the next claims; the batch waits for it before it is acknowledged.
        self._ledger.finish(Outcome(recipient, status, provider_message_id, reason, event))
