"""The delivery ledger as the sending batches write it: claims and outcomes, group-committed.

Every claim (written before the provider is called) and every outcome (written after, with its
event for the outbox) of every batch this process runs goes through one `LedgerWriter`. It writes
what was asked while its previous write ran (or, when idle, within a couple of milliseconds), all
of it in one statement on one connection (one round trip and one commit, see
`DeliveryRepository.record`), so the claims of the next messages and the outcomes of the last ones
share a commit. A claim is awaited: nothing is sent before its row is committed. An outcome is
not: the sender goes on to its next message, and the batch waits for all its outcomes
(`Ledger.settled`) before it is acknowledged. A process that dies first leaves those rows
`sending`, reported `indeterminate` like any send it was in. The outbox relay is nudged a moment
after a write, so that one of its passes publishes the events of many writes.
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


# How long the writer keeps its connection with nothing to write (a send's time many times over).
IDLE_SECONDS = 0.5
# How long a request that finds the writer idle waits for others to share its write. A fast
# account asks its claims ahead of the connections that need them; for the others, 2 ms between
# a slot and its send changes no rate.
LINGER_SECONDS = 0.002


# How long after a write its events wait for the outbox relay, gathering those of later writes.
RELAY_AFTER_SECONDS = 0.05
# Writes at once at most (each on a connection of the pool): one alone would make every account
# of the process wait for each commit in turn.
LANES = 3


class LedgerWriter:
    """Writes the claims and outcomes asked of it, all that is waiting in each statement, on up to
    `LANES` connections at once (a write waits for none but a free lane)."""

    def __init__(self, runtime: Runtime, claimer: str) -> None:
        self._runtime = runtime
        self._claimer = claimer
        self._claims: list[tuple[sender_repo.ClaimRequest, asyncio.Future[sender_repo.Claim]]] = []
        self._outcomes: list[tuple[sender_repo.OutcomeRow, asyncio.Future[bool]]] = []
        # The running lanes; held so that the event loop's weak reference is not the only one.
        self._lanes: set[asyncio.Task[None]] = set()
        self._idle = 0
        self._asked = asyncio.Event()
        self._announcing: asyncio.TimerHandle | None = None

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

    def _announce(self) -> None:
        """Have the outbox relay publish the events written, a moment from now: one relay pass
        (a transaction of its own) then carries the events of many writes."""
        if self._announcing is None:
            self._announcing = asyncio.get_running_loop().call_later(RELAY_AFTER_SECONDS, self._relay)

    def _relay(self) -> None:
        self._announcing = None
        self._runtime.relay.notify()

    def _start(self) -> None:
        if self._idle:
            self._asked.set()
        elif len(self._lanes) < LANES:
            lane = asyncio.get_running_loop().create_task(self._lane())
            self._lanes.add(lane)
            lane.add_done_callback(self._lane_done)

    def _lane_done(self, lane: asyncio.Task[None]) -> None:
        self._lanes.discard(lane)
        if self._claims or self._outcomes:
            self._start()

    async def _lane(self) -> None:
        try:
            # What the other senders ask in this turn of the event loop joins the first write.
            await asyncio.sleep(0)
            async with self._runtime.pool.acquire() as conn:
                repo = sender_repo.DeliveryRepository(conn)
                while True:
                    if not (self._claims or self._outcomes):
                        if not await self._next_request():
                            break
                        continue
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

    async def _next_request(self) -> bool:
        """Wait for a request with the connection kept (giving it back to the pool costs a round
        trip, its reset, as much as a write); False after IDLE_SECONDS without one."""
        self._asked.clear()
        self._idle += 1
        try:
            async with asyncio.timeout(IDLE_SECONDS):
                await self._asked.wait()
        except TimeoutError:
            return False
        finally:
            self._idle -= 1
        # Group commit: the requests of the next moment join this one's write (while writes
        # follow each other, the wait for one gathers them anyway).
        await asyncio.sleep(LINGER_SECONDS)
        return True

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
            self._announce()
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
