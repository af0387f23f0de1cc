"""The process's ledger writer, on the running sender's pool: what is asked together is written
in one statement, outcomes are not waited for by the sends, and a failed write fails only the
requests it carried."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.sender.ledger import Ledger, LedgerWriter, Outcome
from services.sender.repository import Claim
from shared.contracts import MessageSent, SendBatch, utc_now
from tests.sender.conftest import RunningSender
from tests.sender.examples import a_recipient, unique_id

ME = "sender-test:1:ledger"


def a_batch_of(campaign_id: int, count: int) -> SendBatch:
    return SendBatch(
        campaign_id=campaign_id, account_id=1, recipients=[a_recipient(i) for i in range(1, count + 1)]
    )


def sent(batch: SendBatch, recipient_id: int, status: str = "sent") -> Outcome:
    recipient = batch.recipients[recipient_id - 1]
    event = MessageSent(
        campaign_id=batch.campaign_id,
        account_id=batch.account_id,
        recipient_id=recipient_id,
        email=recipient.email,
        name=recipient.name,
        provider_message_id="<id@x>",
        sent_at=utc_now(),
    )
    return Outcome(recipient, status, "<id@x>", None, event)


async def started_at(sender: RunningSender, campaign_id: int) -> dict[int, object]:
    rows = await sender.runtime.pool.fetch(
        "SELECT recipient_id, started_at FROM sender.deliveries WHERE campaign_id = $1", campaign_id
    )
    return {r["recipient_id"]: r["started_at"] for r in rows}


@pytest.mark.connected
class TestLedgerWriter:
    async def test_claims_asked_together_are_one_statement(self, sender: RunningSender) -> None:
        batch = a_batch_of(unique_id(), 5)
        ledger = Ledger(LedgerWriter(sender.runtime, ME), batch)

        claims = await asyncio.gather(*(ledger.claim(r) for r in batch.recipients))

        assert claims == [Claim(True, "sending", ME)] * 5
        # now() is the statement's transaction start: one value, one transaction.
        assert len(set((await started_at(sender, batch.campaign_id)).values())) == 1

    async def test_outcomes_are_written_with_the_next_claims_and_settled_before_the_batch_ends(
        self, sender: RunningSender
    ) -> None:
        batch = a_batch_of(unique_id(), 3)
        ledger = Ledger(LedgerWriter(sender.runtime, ME), batch)
        assert (await ledger.claim(batch.recipients[0])).won

        ledger.finish(sent(batch, 1))
        assert (await ledger.claim(batch.recipients[1])).won
        await ledger.settled()

        assert await sender.statuses(batch.campaign_id) == {1: "sent", 2: "sending"}

    async def test_a_claim_asked_twice_at_once_is_won_once(self, sender: RunningSender) -> None:
        batch = a_batch_of(unique_id(), 1)
        ledger = Ledger(LedgerWriter(sender.runtime, ME), batch)

        first, second = await asyncio.gather(
            ledger.claim(batch.recipients[0]), ledger.claim(batch.recipients[0])
        )

        assert (first, second) == (Claim(True, "sending", ME), Claim(False, "sending", ME))

    async def test_a_failed_write_fails_what_it_carried_and_the_next_one_goes(
        self, sender: RunningSender
    ) -> None:
        batch = a_batch_of(unique_id(), 2)
        ledger = Ledger(LedgerWriter(sender.runtime, ME), batch)
        assert (await ledger.claim(batch.recipients[0])).won

        ledger.finish(sent(batch, 1, status="delivered"))  # no such status: the statement fails
        claim = ledger.claim(batch.recipients[1])
        with pytest.raises(asyncpg.CheckViolationError):
            await claim
        with pytest.raises(asyncpg.CheckViolationError):
            await ledger.settled()

        assert (await ledger.claim(batch.recipients[1])).won
        ledger.finish(sent(batch, 1))
        await ledger.settled()
        assert await sender.statuses(batch.campaign_id) == {1: "sent", 2: "sending"}
