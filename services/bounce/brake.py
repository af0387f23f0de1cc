"""The reputation brake's rules: when an account is paused and when it may send again.

An account is paused once its bounce or complaint rate reaches its threshold, for its pause
length. It is resumed only when that time has passed **and** its rates are back under the
thresholds; until then every poll checks again. A rate that is unknown (no CloudWatch
datapoint, or too few sends to judge) never pauses, and does not hold a pause past its end:
after a day's pause the counted window holds almost nothing, and keeping the account paused
for want of data would keep it paused for ever. An admin override suspends the brake: nothing
is paused, and a paused account is resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from services.bounce.reputation_repository import Account, Counts, Override, Pause


@dataclass(frozen=True)
class Rates:
    """An account's rates (fractions; None: unknown) and where they come from; `sent`: the
    sends they were counted over (None for CloudWatch, which does not say)."""

    source: str
    bounce: float | None
    complaint: float | None
    sent: int | None = None


def counted_rates(counts: Counts, min_sends: int) -> Rates:
    """Rates from our own counts; unknown below `min_sends`, where a few bounces say nothing."""
    if counts.sent < min_sends:
        return Rates("counters", None, None, counts.sent)
    return Rates("counters", counts.bounced / counts.sent, counts.complained / counts.sent, counts.sent)


def breaches(account: Account, rates: Rates) -> list[str]:
    """The rates at or over the account's thresholds, as words for the pause's reason."""
    found = []
    if rates.bounce is not None and rates.bounce >= account.bounce_threshold:
        found.append(f"bounce rate {rates.bounce:.2%} >= {account.bounce_threshold:.2%}")
    if rates.complaint is not None and rates.complaint >= account.complaint_threshold:
        found.append(f"complaint rate {rates.complaint:.3%} >= {account.complaint_threshold:.3%}")
    return found


class Action(Enum):
    """What the brake does to an account after a poll."""

    NOTHING = "nothing"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True)
class Decision:
    """The action and the reason given with its event."""

    action: Action
    reason: str = ""

    def pause_from(self, now: datetime, account: Account) -> Pause:
        """The pause this decision starts."""
        return Pause(now, now + timedelta(hours=account.pause_hours), self.reason)


def decide(
    account: Account, rates: Rates, pause: Pause | None, override: Override | None, now: datetime
) -> Decision:
    """What the brake does to `account` given its rates, its current pause and any override."""
    if override is not None:
        if pause is None:
            return Decision(Action.NOTHING)
        return Decision(Action.RESUME, f"reputation brake overridden by {override.set_by}")
    found = breaches(account, rates)
    if pause is None:
        if found:
            return Decision(Action.PAUSE, f"reputation brake ({rates.source}): {'; '.join(found)}")
        return Decision(Action.NOTHING)
    if now >= pause.until and not found:
        return Decision(Action.RESUME, "reputation brake: pause ended and rates are under the thresholds")
    return Decision(Action.NOTHING)
