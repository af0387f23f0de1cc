"""Audience's internal HTTP API (used by campaign and the console): groups."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from services.audience import repository as audience_repo
from services.audience.models import GroupCreated, GroupIn, GroupOut
from shared.service import RuntimeDep

router = APIRouter(prefix="/internal/v1")

# group_id is a PostgreSQL serial: an id outside it would fail in the driver (a 500), not be "not found".
GroupId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/groups", status_code=status.HTTP_201_CREATED, response_model=GroupCreated)
async def create_group(body: GroupIn, runtime: RuntimeDep) -> GroupCreated:
    """Create a static group; every address is checked, and an address given twice is kept once."""
    limit = runtime.state["max_members"]
    if len(body.members) > limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", "members"],
                    "msg": f"at most {limit} members per request",
                    "type": "too_long",
                }
            ],
        )
    async with runtime.transaction() as conn:
        groups = audience_repo.GroupRepository(conn)
        group_id = await groups.create_static(body.name, body.members)
        group = await groups.get(group_id)
    return GroupCreated(**group.model_dump(), duplicates_ignored=len(body.members) - group.members)


@router.get("/groups", response_model=list[GroupOut])
async def list_groups(runtime: RuntimeDep) -> list[GroupOut]:
    """Every group with its member count."""
    async with runtime.pool.acquire() as conn:
        return await audience_repo.GroupRepository(conn).list()


@router.get("/groups/{group_id}", response_model=GroupOut)
async def get_group(group_id: GroupId, runtime: RuntimeDep) -> GroupOut:
    """One group with its member count."""
    async with runtime.pool.acquire() as conn:
        return await audience_repo.GroupRepository(conn).get(group_id)
