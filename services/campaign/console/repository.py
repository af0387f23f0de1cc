"""SQL of the console: users, their sender addresses, the audit log, and the campaign list as the
console shows it (filtered by the user's senders, searched, sorted, paged). Kept apart from the
service's repository.py because only the console reads these; the same rules hold (the caller
owns the transaction, rows come back as models)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel

from shared.errors import NotFound

Role = Literal["admin", "normal"]

# A login creates the user or refreshes the name the identity provider gives; configured
# administrators are promoted, nobody is demoted here (that is an administrator's edit).
UPSERT_USER = """
INSERT INTO users (name, email, role, subject, last_login_at)
VALUES ($1, $2, CASE WHEN $4 THEN 'admin' ELSE 'normal' END, $3, now())
ON CONFLICT ((lower(email))) DO UPDATE
SET name = excluded.name,
    subject = coalesce(excluded.subject, users.subject),
    role = CASE WHEN $4 THEN 'admin' ELSE users.role END,
    updated_at = now(),
    last_login_at = now()
RETURNING user_id
"""
# The linked sender addresses come along so every request knows what the user may act on.
_USER_COLUMNS = """
SELECT u.user_id, u.name, u.email, u.role, u.created_at, u.last_login_at,
       ARRAY(SELECT l.sender_address_id FROM user_sender_addresses l
             WHERE l.user_id = u.user_id ORDER BY l.sender_address_id) AS sender_address_ids
FROM users u
"""
SELECT_USER = _USER_COLUMNS + " WHERE u.user_id = $1"
SELECT_USERS = (
    _USER_COLUMNS
    + """
WHERE $1::text IS NULL OR u.name ILIKE $1 OR u.email ILIKE $1
ORDER BY u.user_id
LIMIT $2 OFFSET $3
"""
)
SET_ROLE = "UPDATE users SET role = $2, updated_at = now() WHERE user_id = $1"
DELETE_USER = "DELETE FROM users WHERE user_id = $1"
CLEAR_SENDERS = "DELETE FROM user_sender_addresses WHERE user_id = $1"
ADD_SENDERS = """
INSERT INTO user_sender_addresses (user_id, sender_address_id)
SELECT $1, s FROM unnest($2::int[]) AS s
ON CONFLICT DO NOTHING
"""
INSERT_AUDIT = """
INSERT INTO audit_log (user_id, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)
"""
SELECT_AUDIT = """
SELECT audit_id, at, user_id, actor, action, target, details FROM audit_log
ORDER BY audit_id DESC LIMIT $1
"""

# The campaign list of the console. The sort column comes from a fixed map (never from the
# request); ties are broken by id so paging is stable.
CAMPAIGN_SORTS = {
    "id": "c.campaign_id",
    "criado": "c.created_at",
    "nome": "lower(c.name)",
    "remetente": "lower(s.name)",
    "destinatarios": "c.recipients",
    "inicio": "c.started_at",
    "termino": "c.finished_at",
    "status": "c.status",
}
SELECT_CAMPAIGN_ROWS = """
SELECT c.campaign_id, c.created_at, c.name, c.status, c.recipients, c.started_at, c.finished_at,
       c.origin, c.sent, c.failed, c.skipped, c.failure_reason,
       c.sender_address_id, s.name AS sender_name, s.email AS sender_email,
       count(*) OVER () AS total
FROM campaigns c JOIN sender_addresses s USING (sender_address_id)
WHERE ($1::int[] IS NULL OR c.sender_address_id = ANY($1))
  AND ($2::text IS NULL OR c.name ILIKE $2 OR s.name ILIKE $2 OR s.email ILIKE $2
       OR c.campaign_id::text = $3)
  AND CASE WHEN $4::text IS NULL THEN c.origin <> 'test' ELSE c.origin = $4 END
ORDER BY {order} {direction} NULLS LAST, c.campaign_id {direction}
LIMIT $5 OFFSET $6
"""
SELECT_CAMPAIGN_ROW = """
SELECT c.campaign_id, c.created_at, c.name, c.status, c.recipients, c.started_at, c.finished_at,
       c.origin, c.sent, c.failed, c.skipped, c.failure_reason,
       c.sender_address_id, s.name AS sender_name, s.email AS sender_email
FROM campaigns c JOIN sender_addresses s USING (sender_address_id)
WHERE c.campaign_id = $1
"""
# The live cells of a few rows (status polling).
SELECT_CAMPAIGN_STATUS = """
SELECT c.campaign_id, c.status, c.recipients, c.started_at, c.finished_at, c.sent, c.failed,
       c.skipped, c.failure_reason
FROM campaigns c WHERE c.campaign_id = ANY($1::int[])
"""


class User(BaseModel):
    """A console user with what they may act on."""

    user_id: int
    name: str
    email: str
    role: Role
    sender_address_ids: list[int]
    created_at: datetime | None = None
    last_login_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        """Administrators see and act on everything."""
        return self.role == "admin"

    def may_use_sender(self, sender_address_id: int) -> bool:
        """Whether the user may create or act on campaigns of this sender address."""
        return self.is_admin or sender_address_id in self.sender_address_ids


class AuditEntry(BaseModel):
    """One administrative action."""

    audit_id: int
    at: datetime
    user_id: int | None
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]


class CampaignRow(BaseModel):
    """A campaign as a row of the Campanhas screen."""

    campaign_id: int
    created_at: datetime
    name: str
    status: str
    recipients: int | None
    started_at: datetime | None
    finished_at: datetime | None
    origin: str
    sent: int
    failed: int
    skipped: int
    failure_reason: str | None
    sender_address_id: int
    sender_name: str
    sender_email: str


class CampaignStatusRow(BaseModel):
    """The cells of a campaign row that change while it sends."""

    campaign_id: int
    status: str
    recipients: int | None
    started_at: datetime | None
    finished_at: datetime | None
    sent: int
    failed: int
    skipped: int
    failure_reason: str | None


@dataclass(frozen=True)
class CampaignQuery:
    """What the campaign list is narrowed to and ordered by."""

    search: str | None = None
    sort: str = "id"
    descending: bool = True
    origin: str | None = None
    limit: int = 25
    offset: int = 0


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class UserRepository:
    """Console users and their linked sender addresses."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def login(self, name: str, email: str, subject: str | None, admin: bool) -> User:
        """Create or refresh the user who just signed in; `admin` promotes them."""
        user_id = await self._conn.fetchval(UPSERT_USER, name, email, subject, admin)
        return await self.get(user_id)

    async def get(self, user_id: int) -> User:
        """The user; NotFound if there is none (e.g. removed)."""
        row = await self._conn.fetchrow(SELECT_USER, user_id)
        if row is None:
            raise NotFound(f"user {user_id} not found")
        return User.model_validate(dict(row))

    async def find(self, user_id: int) -> User | None:
        """The user, or None."""
        row = await self._conn.fetchrow(SELECT_USER, user_id)
        return None if row is None else User.model_validate(dict(row))

    async def list(self, search: str | None = None, limit: int = 100, offset: int = 0) -> list[User]:
        """Users whose name or e-mail contains `search`, by code."""
        rows = await self._conn.fetch(SELECT_USERS, _like(search) if search else None, limit, offset)
        return [User.model_validate(dict(r)) for r in rows]

    async def set_role(self, user_id: int, role: Role) -> None:
        """Make the user an administrator or a normal user."""
        await self._conn.execute(SET_ROLE, user_id, role)

    async def set_senders(self, user_id: int, sender_address_ids: Iterable[int]) -> None:
        """Replace the user's linked sender addresses."""
        await self._conn.execute(CLEAR_SENDERS, user_id)
        await self._conn.execute(ADD_SENDERS, user_id, sorted(set(sender_address_ids)))

    async def remove(self, user_id: int) -> None:
        """Delete the user (their next login creates them again as a normal user)."""
        await self._conn.execute(DELETE_USER, user_id)


class AuditRepository:
    """The audit log."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(
        self, user_id: int | None, actor: str, action: str, target: str | None, details: dict[str, Any]
    ) -> None:
        """Append one entry."""
        await self._conn.execute(INSERT_AUDIT, user_id, actor, action, target, details)

    async def latest(self, limit: int = 100) -> list[AuditEntry]:
        """The newest entries first."""
        return [AuditEntry.model_validate(dict(r)) for r in await self._conn.fetch(SELECT_AUDIT, limit)]


class CampaignListRepository:
    """The campaign list and its live status cells."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def page(
        self, query: CampaignQuery, sender_address_ids: list[int] | None
    ) -> tuple[list[CampaignRow], int]:
        """One page of campaigns (only those of `sender_address_ids` unless None) and how many match."""
        order = CAMPAIGN_SORTS.get(query.sort, CAMPAIGN_SORTS["id"])
        sql = SELECT_CAMPAIGN_ROWS.format(order=order, direction="DESC" if query.descending else "ASC")
        search = query.search.strip() if query.search else None
        rows = await self._conn.fetch(
            sql,
            sender_address_ids,
            _like(search) if search else None,
            search,
            query.origin,
            query.limit,
            query.offset,
        )
        total = int(rows[0]["total"]) if rows else 0
        return [CampaignRow.model_validate(dict(r)) for r in rows], total

    async def row(self, campaign_id: int) -> CampaignRow:
        """One campaign as a row of the list; NotFound if there is none."""
        found = await self._conn.fetchrow(SELECT_CAMPAIGN_ROW, campaign_id)
        if found is None:
            raise NotFound(f"campaign {campaign_id} not found")
        return CampaignRow.model_validate(dict(found))

    async def statuses(self, campaign_ids: list[int]) -> list[CampaignStatusRow]:
        """The live cells of these campaigns."""
        rows = await self._conn.fetch(SELECT_CAMPAIGN_STATUS, campaign_ids)
        return [CampaignStatusRow.model_validate(dict(r)) for r in rows]
