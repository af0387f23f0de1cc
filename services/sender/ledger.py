"""The delivery ledger as the sending batches write it: claims and outcomes, group-committed.

Every claim (written before the provider is called) and every outcome (written after, with its
event for the outbox) of every batch this process runs goes through one `LedgerWriter`. It writes
what was asked while its previous write ran, all of it in one statement (one round trip and one
commit, see `DeliveryRepository.record`), so the claims of the next messages and the outcomes of
the last ones share a commit. A claim is awaited: nothing is sent before its row is committed. An
outcome is not: the worker goes on to its next message, and the batch waits for all its outcomes
(`Ledger.settled`) before it is acknowledged. A process that dies first leaves those rows
`sending`, reported `indeterminate` like any send it was in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.sender import repository as sender_repo
from shared import outbox
from shared.contracts import Event, Recipient, SendBatch
from shared.service import Runtime
from shared.telemetry import current_trace_headers


@dataclass(frozen=True)
class Outcome:
    """A delivery's outcome and the event that announces it."""

    recipient: Recipient
    status: str
    provider_message_id: str | None
    reason: str | None
    event: Event


class LedgerWriter:
    """Writes the claims and outcomes asked of it, one statement at a time, on one connection."""

    def __init__(self, runtime: Runtime, claimer: str) -> None:
        self._runtime = runtime
        self._claimer = claimer
        self._claims: list[tuple[sender_repo.ClaimRequest, asyncio.Future[sender_repo.Claim]]] = []
        self._outcomes: list[tuple[sender_repo.OutcomeRow, asyncio.Future[bool]]] = []
        # The running writes; held so that the event loop's weak reference is not the only one.
        self._task: asyncio.Task[None] | None = None

    def claim(self, request: sender_repo.ClaimRequest) -> asyncio.Future[sender_repo.Claim]:
        """The claim once it is committed: won, or who had the delivery before."""
        future: asyncio.Future[sender_repo.Claim] = asyncio.get_running_loop().create_future()
        self._claims.append((request, future))
        self._start()
        return future

    def finish(self, row: sender_repo.OutcomeRow) -> asyncio.Future[bool]:
        """Whether the outcome completed its claim, once committed (False: the delivery was no
        longer in flight, another process judged it indeterminate and reported that)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outcomes.append((row, future))
        self._start()
        return future

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write_all())

    async def _write_all(self) -> None:
        try:
            # What the other workers ask in this turn of the event loop joins the first write.
            await asyncio.sleep(0)
            async with self._runtime.pool.acquire() as conn:
                repo = sender_repo.DeliveryRepository(conn)
                while self._claims or self._outcomes:
                    claims, self._claims = self._claims, []
                    outcomes, self._outcomes = self._outcomes, []
                    try:
                        await self._write(repo, claims, outcomes)
                    except Exception as exc:
                        _fail(claims, outcomes, exc)
                        # The connection may be broken: the next write takes another.
                        break
        except Exception as exc:
            claims, self._claims = self._claims, []
            outcomes, self._outcomes = self._outcomes, []
            _fail(claims, outcomes, exc)
        finally:
            self._task = None
            if self._claims or self._outcomes:
                self._start()

    async def _write(
        self,
        repo: sender_repo.DeliveryRepository,
        claims: list[tuple[sender_repo.ClaimRequest, asyncio.Future[sender_repo.Claim]]],
        outcomes: list[tuple[sender_repo.OutcomeRow, asyncio.Future[bool]]],
    ) -> None:
        # A delivery claimed twice in one write (a batch delivered twice at once): the first
        # request claims it, the second finds it in flight in this very process.
        requests: dict[tuple[int, int], sender_repo.ClaimRequest] = {}
        for request, _ in claims:
            requests.setdefault((request.campaign_id, request.recipient_id), request)
        result = await repo.record(self._claimer, list(requests.values()), [row for row, _ in outcomes])
        if outcomes:
            self._runtime.relay.notify()
        for row, finished in outcomes:
            if not finished.done():
                finished.set_result((row.campaign_id, row.recipient_id) in result.finished)
        for request, claimed in claims:
            key = (request.campaign_id, request.recipient_id)
            if requests.pop(key, None) is request:
                claim = result.claims[key]
            else:
                claim = sender_repo.Claim(False, "sending", self._claimer)
            if not claimed.done():
                claimed.set_result(claim)


def _fail(
    claims: list[tuple[sender_repo.ClaimRequest, asyncio.Future[sender_repo.Claim]]],
    outcomes: list[tuple[sender_repo.OutcomeRow, asyncio.Future[bool]]],
    exc: Exception,
) -> None:
    for _, claim in claims:
        if not claim.done():
            claim.set_exception(exc)
    for _, outcome in outcomes:
        if not outcome.done():
            outcome.set_exception(exc)


class Ledger:
    """Claims and outcomes of one batch's deliveries, through the process's writer."""

    def __init__(self, writer: LedgerWriter, batch: SendBatch) -> None:
        self._writer = writer
        self._batch = batch
        self._unsettled: list[asyncio.Future[bool]] = []
        # The outcome events continue the batch's trace.
        self._trace = current_trace_headers()

    def claim(self, recipient: Recipient) -> asyncio.Future[sender_repo.Claim]:
        """Record that this process sends to the recipient now, or say who did before (once the
        claim is committed)."""
        batch = self._batch
        return self._writer.claim(
            sender_repo.ClaimRequest(
                batch.campaign_id, batch.account_id, recipient.recipient_id, recipient.email
            )
        )

    def finish(self, outcome: Outcome) -> None:
        """Complete a claimed delivery and queue its event, without waiting (see `settled`)."""
        row = sender_repo.OutcomeRow(
            self._batch.campaign_id,
            outcome.recipient.recipient_id,
            outcome.status,
            outcome.provider_message_id,
            outcome.reason,
            outbox.event_row(outcome.event, self._trace),
        )
        self._unsettled.append(self._writer.finish(row))

    async def settled(self) -> None:
        """Wait until every outcome asked so far is written; raise the first failure."""
        while self._unsettled:
            unsettled, self._unsettled = self._unsettled, []
            results = await asyncio.gather(*unsettled, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
