"""The reputation brake's loop: every poll, judge each active account and announce pauses and
resumes through the outbox.

One replica polls at a time (a transaction-scoped advisory lock held for the poll), so an
account is never paused twice by two replicas. Each account is judged in a transaction of its
own: an account whose rates cannot be read (CloudWatch away, a key no longer valid) is logged
and skipped until the next poll without holding back the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Gauge

from services.bounce import brake
from services.bounce.cloudwatch import CloudWatchRates
from services.bounce.reputation_repository import Account, Reading, ReputationRepository
from shared import outbox
from shared.contracts import AccountPaused, AccountResumed
from shared.pump import Pump
from shared.service import Runtime

log = logging.getLogger(__name__)

LOCK_KEY = "bounce.reputation-brake"


@dataclass(frozen=True)
class BrakeConfig:
    """The brake's settings."""

    poll_seconds: float
    min_sends: int
    history: timedelta
    # Bounce's own window over counted events, as SES's rates look at the recent past.
    window: timedelta = timedelta(hours=24)


class BrakeMetrics:
    """The rates and pauses of the last poll, per account, on the service's /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["account_id"]
        self.bounce_rate = Gauge(
            "mailer_account_bounce_rate", "Latest bounce rate (fraction)", labels, registry=registry
        )
        self.complaint_rate = Gauge(
            "mailer_account_complaint_rate", "Latest complaint rate (fraction)", labels, registry=registry
        )
        self.paused = Gauge(
            "mailer_account_brake_paused",
            "1 while the reputation brake pauses the account",
            labels,
            registry=registry,
        )

    def show(self, account_id: int, rates: brake.Rates, paused: bool) -> None:
        """Show one account's poll (an unknown rate keeps its last value)."""
        label = str(account_id)
        if rates.bounce is not None:
            self.bounce_rate.labels(label).set(rates.bounce)
        if rates.complaint is not None:
            self.complaint_rate.labels(label).set(rates.complaint)
        self.paused.labels(label).set(1 if paused else 0)

    def clear(self) -> None:
        """Show nothing: another replica polls, and this one's last values would go stale."""
        for gauge in (self.bounce_rate, self.complaint_rate, self.paused):
            gauge.clear()


class BrakeLoop:
    """Polls every `poll_seconds`, or at once when nudged (an override was set or cleared)."""

    def __init__(
        self,
        runtime: Runtime,
        config: BrakeConfig,
        cloudwatch: CloudWatchRates,
        clock: Callable[[], datetime],
    ) -> None:
        self._runtime = runtime
        self._config = config
        self._cloudwatch = cloudwatch
        self.clock = clock
        self._metrics = BrakeMetrics(runtime.registry)
        self._pump = Pump(self._step, "reputation brake", config.poll_seconds)

    def notify(self) -> None:
        """Poll now rather than at the next tick."""
        self._pump.notify()

    async def run(self) -> None:
        """Poll until cancelled."""
        await self._pump.run()

    async def _step(self) -> bool:
        await self.poll()
        return False

    async def poll(self) -> bool:
        """Judge every active account once; False if another replica is polling."""
        now = self.clock()
        async with self._runtime.pool.acquire() as conn, conn.transaction():
            repository = ReputationRepository(conn)
            if not await repository.try_lock(LOCK_KEY):
                self._metrics.clear()
                return False
            await repository.prune(now - self._config.window, now - self._config.history)
            for account in await repository.active_accounts():
                try:
                    await self._judge(account, now)
                except Exception:
                    log.warning("reputation of account %s not judged", account.account_id, exc_info=True)
        return True

    async def _rates(self, account: Account, now: datetime) -> brake.Rates:
        if account.reads_cloudwatch and account.ses is not None:
            return await self._cloudwatch.read(account.ses, now)
        async with self._runtime.pool.acquire() as conn:
            counts = await ReputationRepository(conn).counts_since(
                account.account_id, now - self._config.window
            )
        return brake.counted_rates(counts, self._config.min_sends)

    async def _judge(self, account: Account, now: datetime) -> None:
        # Rates first, outside the transaction: a CloudWatch call holds no database row.
        rates = await self._rates(account, now)
        async with self._runtime.transaction() as conn:
            repository = ReputationRepository(conn)
            pause = await repository.pause(account.account_id)
            override = await repository.override(account.account_id, now)
            decision = brake.decide(account, rates, pause, override, now)
            paused = pause is not None
            if decision.action is brake.Action.PAUSE:
                pause = decision.pause_from(now, account)
                await repository.start_pause(account.account_id, pause)
                await outbox.add_event(
                    conn,
                    AccountPaused(
                        account_id=account.account_id, reason=pause.reason, source="bounce", until=pause.until
                    ),
                )
                paused = True
            elif decision.action is brake.Action.RESUME:
                await repository.end_pause(account.account_id)
                await outbox.add_event(
                    conn,
                    AccountResumed(account_id=account.account_id, reason=decision.reason, source="bounce"),
                )
                paused = False
            await repository.add_reading(
                account.account_id,
                Reading(now, rates.source, rates.bounce, rates.complaint, rates.sent, paused),
            )
        if decision.action is not brake.Action.NOTHING:
            log.warning(
                "account %s %s by the reputation brake: %s",
                account.account_id,
                decision.action.value,
                decision.reason,
            )
        self._metrics.show(account.account_id, rates, paused)
