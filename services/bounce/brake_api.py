"""The admin override of the reputation brake, and an account's reputation for the console.

The console (campaign) calls these on behalf of a signed-in administrator and names them in
`by`: bounce has no users of its own. Setting or clearing an override nudges the brake, so a
paused account is resumed within seconds rather than at the next poll.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AwareDatetime, BaseModel, Field

from services.bounce.brake_loop import BrakeLoop
from services.bounce.reputation_repository import Override, Pause, Reading, ReputationRepository
from shared.errors import NotFound
from shared.service import Runtime, RuntimeDep

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/accounts")

By = Annotated[str, Query(min_length=1, max_length=200, description="The administrator switching it off")]


class OverrideRequest(BaseModel):
    """Ignore the brake of an account until `until`, or until switched off (None)."""

    by: str = Field(min_length=1, max_length=200)
    until: AwareDatetime | None = None
    reason: str = Field(default="", max_length=1000)


class Reputation(BaseModel):
    """An account's brake state and its rates over the asked period, oldest first."""

    account_id: int
    pause: Pause | None
    override: Override | None
    history: list[Reading]


def brake_of(runtime: Runtime) -> BrakeLoop:
    """The service's brake loop."""
    loop: BrakeLoop = runtime.state["brake"]
    return loop


async def _known(repository: ReputationRepository, account_id: int) -> None:
    if await repository.account(account_id) is None:
        raise NotFound(f"account {account_id} is unknown to bounce")


@router.post("/{account_id}/brake-override", status_code=status.HTTP_201_CREATED)
async def set_override(account_id: int, body: OverrideRequest, runtime: RuntimeDep) -> Override:
    """Ignore the account's brake (it is not paused, and resumed if paused) until `until` or switched off."""
    brake = brake_of(runtime)
    now = brake.clock()
    if body.until is not None and body.until <= now:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"loc": ["body", "until"], "msg": "must be in the future", "type": "value_error"}],
        )
    async with runtime.transaction() as conn:
        repository = ReputationRepository(conn)
        await _known(repository, account_id)
        override = await repository.set_override(account_id, body.until, body.reason, body.by, now)
    log.warning(
        "reputation brake of account %s overridden by %s until %s: %s",
        account_id,
        body.by,
        body.until or "switched off",
        body.reason,
    )
    brake.notify()
    return override


@router.delete("/{account_id}/brake-override", status_code=status.HTTP_204_NO_CONTENT)
async def clear_override(account_id: int, by: By, runtime: RuntimeDep) -> None:
    """Let the brake judge the account again."""
    brake = brake_of(runtime)
    async with runtime.transaction() as conn:
        if not await ReputationRepository(conn).clear_override(account_id, by, brake.clock()):
            raise NotFound(f"account {account_id} has no brake override in force")
    log.warning("reputation brake override of account %s switched off by %s", account_id, by)
    brake.notify()


@router.get("/{account_id}/reputation")
async def reputation(
    account_id: int, runtime: RuntimeDep, hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24
) -> Reputation:
    """The account's pause, override and rates of the last `hours` ("uso das contas")."""
    now = brake_of(runtime).clock()
    async with runtime.pool.acquire() as conn:
        repository = ReputationRepository(conn)
        await _known(repository, account_id)
        return Reputation(
            account_id=account_id,
            pause=await repository.pause(account_id),
            override=await repository.override(account_id, now),
            history=await repository.history(account_id, now - timedelta(hours=hours)),
        )
