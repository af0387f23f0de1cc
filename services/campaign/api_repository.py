"""SQL of API sends: keys, routing rules, templates and the sends themselves.

Kept apart from `repository.py` (campaigns, accounts, results), which other work edits at the
same time; the same rules hold: repositories take the connection they are given, never commit.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from shared.errors import NotFound

INSERT_API_KEY = """
INSERT INTO api_keys (system, name, token_prefix, token_sha256, rate_per_minute)
VALUES ($1, $2, $3, $4, $5) RETURNING api_key_id
"""
INSERT_API_KEY_SENDERS = """
INSERT INTO api_key_senders (api_key_id, sender_address_id) SELECT $1, unnest($2::int[])
"""
# Keys with their sender scope (an empty array when the key may name no sender directly).
_KEY_COLUMNS = """
SELECT k.*, coalesce(array_agg(s.sender_address_id ORDER BY s.sender_address_id)
                     FILTER (WHERE s.sender_address_id IS NOT NULL), '{}') AS sender_address_ids
FROM api_keys k LEFT JOIN api_key_senders s USING (api_key_id)
"""
SELECT_API_KEY = _KEY_COLUMNS + " WHERE k.api_key_id = $1 GROUP BY k.api_key_id"
# Only a key not revoked authenticates; the unique index on the hash finds it.
SELECT_ACTIVE_KEY_BY_HASH = (
    _KEY_COLUMNS + " WHERE k.token_sha256 = $1 AND k.revoked_at IS NULL GROUP BY k.api_key_id"
)
SELECT_API_KEYS = _KEY_COLUMNS + " GROUP BY k.api_key_id ORDER BY k.api_key_id"
REVOKE_API_KEY = """
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE api_key_id = $1 RETURNING api_key_id
"""
# Over RabbitMQ there is no key: a system may use the senders of any of its keys still active.
SYSTEM_SENDERS = """
SELECT DISTINCT s.sender_address_id
FROM api_keys k JOIN api_key_senders s USING (api_key_id)
WHERE k.system = $1 AND k.revoked_at IS NULL
"""
SYSTEM_KNOWN = "SELECT EXISTS (SELECT 1 FROM api_keys WHERE system = $1 AND revoked_at IS NULL)"

INSERT_RULE = """
INSERT INTO routing_rules (system, tenant, message_type, sender_address_id)
VALUES ($1, $2, $3, $4) RETURNING *
"""
SELECT_RULES = "SELECT * FROM routing_rules ORDER BY system, tenant, message_type"
DELETE_RULE = "DELETE FROM routing_rules WHERE routing_rule_id = $1 RETURNING routing_rule_id"
# The tenant's own rule first, then the system-wide one (tenant '').
MATCH_RULE = """
SELECT sender_address_id FROM routing_rules
WHERE system = $1 AND message_type = $3 AND tenant IN ($2, '')
ORDER BY tenant DESC LIMIT 1
"""
RULE_TAKEN = """
SELECT EXISTS (SELECT 1 FROM routing_rules WHERE system = $1 AND tenant = $2 AND message_type = $3)
"""

INSERT_TEMPLATE = """
INSERT INTO templates (key, subject, html, text_body) VALUES ($1, $2, $3, $4) RETURNING *
"""
SELECT_TEMPLATE = "SELECT * FROM templates WHERE key = $1"
SELECT_TEMPLATES = "SELECT * FROM templates ORDER BY key"

SENDER_BY_EMAIL = "SELECT sender_address_id FROM sender_addresses WHERE lower(email) = lower($1)"

# Serialises the requests of one (system, idempotency key) until the first commits, so a
# concurrent repeat finds the send instead of creating a second one.
LOCK_IDEMPOTENCY_KEY = "SELECT pg_advisory_xact_lock(hashtextextended('api-send:' || $1 || ':' || $2, 0))"
SELECT_SEND_BY_KEY = "SELECT * FROM api_sends WHERE system = $1 AND idempotency_key = $2"
INSERT_CAMPAIGN = """
INSERT INTO campaigns (name, sender_address_id, subject, html, text_body, priority, tracking, origin)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'api')
RETURNING campaign_id
"""
INSERT_CAMPAIGN_GROUP = "INSERT INTO campaign_groups (campaign_id, group_id, position) VALUES ($1, $2, 1)"
INSERT_SEND = """
INSERT INTO api_sends (send_id, system, idempotency_key, request_sha256, campaign_id, channel,
                       api_key_id, message_type, tenant, template_key, recipients, scheduled_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
"""
SELECT_SEND = "SELECT * FROM api_sends WHERE send_id = $1"
# Scheduled sends whose time has come and are still drafts; SKIP LOCKED lets replicas share them.
SELECT_DUE = """
SELECT s.* FROM api_sends s JOIN campaigns c USING (campaign_id)
WHERE s.scheduled_at <= now() AND c.status = 'draft'
ORDER BY s.scheduled_at LIMIT $1
FOR UPDATE OF s SKIP LOCKED
"""
# "Envios por API": the sends with their campaign's sender, status and view counts.
SELECT_SEND_LISTING = """
SELECT s.send_id, s.system, s.idempotency_key, s.channel, s.message_type, s.tenant,
       s.scheduled_at, s.created_at, c.campaign_id, c.name, c.status, c.recipients, c.sent,
       c.failed, c.skipped, c.read, c.opens, c.failure_reason, a.email AS sender_email,
       a.name AS sender_name
FROM api_sends s JOIN campaigns c USING (campaign_id) JOIN sender_addresses a USING (sender_address_id)
WHERE ($1::text IS NULL OR s.system = $1) AND ($4::int[] IS NULL OR c.sender_address_id = ANY($4))
ORDER BY s.created_at DESC, s.send_id
LIMIT $2 OFFSET $3
"""


class ApiKey(BaseModel):
    """A stored API key (its token is never stored, only its hash)."""

    api_key_id: int
    system: str
    name: str
    token_prefix: str
    rate_per_minute: int
    created_at: datetime
    revoked_at: datetime | None
    sender_address_ids: list[int]


class RoutingRule(BaseModel):
    """(system, tenant, message type) -> sender address; tenant '' is any tenant."""

    routing_rule_id: int
    system: str
    tenant: str
    message_type: str
    sender_address_id: int
    created_at: datetime


class Template(BaseModel):
    """A stored template that API sends name by `key`."""

    template_id: int
    key: str
    subject: str
    html: str
    text_body: str | None
    created_at: datetime
    updated_at: datetime


class ApiSend(BaseModel):
    """A stored API send (its campaign holds content, status and results)."""

    send_id: UUID
    system: str
    idempotency_key: str
    request_sha256: bytes
    campaign_id: int
    channel: str
    api_key_id: int | None
    message_type: str | None
    tenant: str | None
    template_key: str | None
    recipients: list[dict[str, Any]] | None
    scheduled_at: datetime | None
    created_at: datetime


class SendListing(BaseModel):
    """One line of "Envios por API"."""

    send_id: UUID
    system: str
    idempotency_key: str
    channel: str
    message_type: str | None
    tenant: str | None
    scheduled_at: datetime | None
    created_at: datetime
    campaign_id: int
    name: str
    status: str
    recipients: int | None
    sent: int
    failed: int
    skipped: int
    read: int
    opens: int
    failure_reason: str | None
    sender_email: str
    sender_name: str


class ApiKeyRepository:
    """API keys and their sender scope."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create(
        self, system: str, name: str, prefix: str, digest: bytes, rate_per_minute: int, senders: list[int]
    ) -> ApiKey:
        """Store a key (by its hash) with the senders it may name."""
        key_id = await self._conn.fetchval(INSERT_API_KEY, system, name, prefix, digest, rate_per_minute)
        await self._conn.execute(INSERT_API_KEY_SENDERS, key_id, senders)
        return await self.get(key_id)

    async def get(self, api_key_id: int) -> ApiKey:
        """The key; NotFound if there is none."""
        row = await self._conn.fetchrow(SELECT_API_KEY, api_key_id)
        if row is None:
            raise NotFound(f"API key {api_key_id} not found")
        return ApiKey.model_validate(dict(row))

    async def active_by_hash(self, digest: bytes) -> ApiKey | None:
        """The key not revoked whose token has this SHA-256, if any."""
        row = await self._conn.fetchrow(SELECT_ACTIVE_KEY_BY_HASH, digest)
        return None if row is None else ApiKey.model_validate(dict(row))

    async def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones included."""
        return [ApiKey.model_validate(dict(r)) for r in await self._conn.fetch(SELECT_API_KEYS)]

    async def revoke(self, api_key_id: int) -> None:
        """Revoke the key (from now on it authenticates nothing); NotFound if there is none."""
        if await self._conn.fetchval(REVOKE_API_KEY, api_key_id) is None:
            raise NotFound(f"API key {api_key_id} not found")

    async def system_senders(self, system: str) -> set[int]:
        """The senders any active key of the system may name."""
        return {r["sender_address_id"] for r in await self._conn.fetch(SYSTEM_SENDERS, system)}

    async def system_known(self, system: str) -> bool:
        """Whether the system has an active key (it is a registered calling system)."""
        return bool(await self._conn.fetchval(SYSTEM_KNOWN, system))


class RoutingRuleRepository:
    """Routing rules."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create(
        self, system: str, tenant: str, message_type: str, sender_address_id: int
    ) -> RoutingRule:
        """Store a rule."""
        row = await self._conn.fetchrow(INSERT_RULE, system, tenant, message_type, sender_address_id)
        return RoutingRule.model_validate(dict(row))

    async def taken(self, system: str, tenant: str, message_type: str) -> bool:
        """Whether a rule for exactly this key exists."""
        return bool(await self._conn.fetchval(RULE_TAKEN, system, tenant, message_type))

    async def list(self) -> builtins.list[RoutingRule]:
        """Every rule."""
        return [RoutingRule.model_validate(dict(r)) for r in await self._conn.fetch(SELECT_RULES)]

    async def delete(self, routing_rule_id: int) -> None:
        """Delete a rule; NotFound if there is none."""
        if await self._conn.fetchval(DELETE_RULE, routing_rule_id) is None:
            raise NotFound(f"routing rule {routing_rule_id} not found")

    async def match(self, system: str, tenant: str, message_type: str) -> int | None:
        """The sender address the rules give, the tenant's own rule first."""
        found: int | None = await self._conn.fetchval(MATCH_RULE, system, tenant, message_type)
        return found


class TemplateRepository:
    """Stored templates."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create(self, key: str, subject: str, html: str, text: str | None) -> Template:
        """Store a template."""
        return Template.model_validate(
            dict(await self._conn.fetchrow(INSERT_TEMPLATE, key, subject, html, text))
        )

    async def get(self, key: str) -> Template | None:
        """The template with this key, if any."""
        row = await self._conn.fetchrow(SELECT_TEMPLATE, key)
        return None if row is None else Template.model_validate(dict(row))

    async def list(self) -> builtins.list[Template]:
        """Every template."""
        return [Template.model_validate(dict(r)) for r in await self._conn.fetch(SELECT_TEMPLATES)]


class ApiSendRepository:
    """API sends and the campaigns they create."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock_key(self, system: str, idempotency_key: str) -> None:
        """Hold the (system, key) lock until the transaction ends."""
        await self._conn.execute(LOCK_IDEMPOTENCY_KEY, system, idempotency_key)

    async def by_key(self, system: str, idempotency_key: str) -> ApiSend | None:
        """The send made under this idempotency key, if any."""
        row = await self._conn.fetchrow(SELECT_SEND_BY_KEY, system, idempotency_key)
        return None if row is None else ApiSend.model_validate(dict(row))

    async def get(self, send_id: UUID) -> ApiSend:
        """The send; NotFound if there is none."""
        row = await self._conn.fetchrow(SELECT_SEND, send_id)
        if row is None:
            raise NotFound(f"send {send_id} not found")
        return ApiSend.model_validate(dict(row))

    async def sender_by_email(self, email: str) -> int | None:
        """The id of the sender address with this e-mail (case-insensitive), if any."""
        found: int | None = await self._conn.fetchval(SENDER_BY_EMAIL, email)
        return found

    async def create_campaign(
        self,
        *,
        name: str,
        sender_address_id: int,
        group_id: int | None,
        subject: str,
        html: str,
        text: str | None,
        priority: int,
        tracking: str,
    ) -> int:
        """A draft campaign of origin 'api' (with its group, when the send names one)."""
        campaign_id: int = await self._conn.fetchval(
            INSERT_CAMPAIGN, name, sender_address_id, subject, html, text, priority, tracking
        )
        if group_id is not None:
            await self._conn.execute(INSERT_CAMPAIGN_GROUP, campaign_id, group_id)
        return campaign_id

    async def create(self, send: ApiSend) -> None:
        """Store the send."""
        await self._conn.execute(
            INSERT_SEND,
            send.send_id,
            send.system,
            send.idempotency_key,
            send.request_sha256,
            send.campaign_id,
            send.channel,
            send.api_key_id,
            send.message_type,
            send.tenant,
            send.template_key,
            send.recipients,
            send.scheduled_at,
        )

    async def due(self, limit: int) -> builtins.list[ApiSend]:
        """Scheduled sends whose time has come, locked for this transaction."""
        return [ApiSend.model_validate(dict(r)) for r in await self._conn.fetch(SELECT_DUE, limit)]

    async def listing(
        self, system: str | None, limit: int, offset: int, sender_ids: builtins.list[int] | None = None
    ) -> builtins.list[SendListing]:
        """Sends, newest first (of one system, or all; from these senders, or any)."""
        rows = await self._conn.fetch(SELECT_SEND_LISTING, system, limit, offset, sender_ids)
        return [SendListing.model_validate(dict(r)) for r in rows]
