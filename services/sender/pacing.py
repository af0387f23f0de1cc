"""An account's pace as the sender builds it: its sends of the last 24 hours read from the
ledger, the provider's own limits when the account honours them, and what a hold does (the
account is shown waiting, and a long wait stops its consumer until it ends)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal, cast

from services.sender import repository as sender_repo
from services.sender.accounts import Pace, PaceFactory
from services.sender.limits import SendingPace
from services.sender.transport import MailTransport
from shared.broker import publish_event
from shared.contracts import AccountConfigured, AccountHeld, utc_now
from shared.service import Runtime

log = logging.getLogger(__name__)

HoldReason = Literal["quota", "warmup", "throttled"]


def pace_factory(hold_consumer_after: float) -> PaceFactory:
    """Builds each account's pace; holds longer than `hold_consumer_after` seconds stop the
    account's consumer until they end."""

    async def make(runtime: Runtime, config: AccountConfigured, transport: MailTransport) -> Pace:
        account_id = config.account_id

        async def on_hold(reason: str, until: datetime) -> None:
            log.warning(
                "account waits", extra={"account_id": account_id, "reason": reason, "until": str(until)}
            )
            try:
                await publish_event(
                    runtime.broker,
                    AccountHeld(account_id=account_id, reason=cast(HoldReason, reason), until=until),
                )
            except Exception:
                # Only the console's view of the wait is lost; the wait itself goes on.
                log.warning("account hold not announced", extra={"account_id": account_id}, exc_info=True)
            if (until - utc_now()).total_seconds() > hold_consumer_after:
                runtime.state["sender"].accounts.hold(account_id, until)

        async with runtime.pool.acquire() as conn:
            history = await sender_repo.AccountRepository(conn).sent_per_minute(account_id)
        pace = SendingPace(config, history, on_hold=on_hold)
        if config.use_provider_limits:
            try:
                limits = await transport.provider_limits()
            except Exception:
                # The account's own settings still hold; the provider's are read again next time.
                log.warning("provider limits not read", extra={"account_id": account_id}, exc_info=True)
            else:
                if limits is not None:
                    pace.apply_provider_limits(limits)
        return pace

    return make
