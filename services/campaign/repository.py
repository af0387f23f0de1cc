"""All SQL of the campaign service. Repositories use the connection they are given; the caller
owns the transaction."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.campaign.lifecycle import Status
from services.campaign.models import Account, Campaign, LinkClicks, Result, SenderAddress
from shared.contracts import (
    AttachmentRef,
    DeliveryEvent,
    LinkClicked,
    MessageBounced,
    MessageComplained,
    MessageOpened,
)
from shared.errors import NotFound
from shared.links import ANONYMOUS

# The columns an account is created or edited with (name and transport are set once).
ACCOUNT_COLUMNS = (
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_username",
    "smtp_password_encrypted",
    "ses_region",
    "ses_access_key_id",
    "ses_secret_access_key_encrypted",
    "ses_endpoint_url",
    "rate_per_second",
    "active",
    "daily_quota",
    "warmup_started_on",
    "warmup_start_per_day",
    "warmup_growth_per_day",
    "use_provider_limits",
    "max_connections",
    "bounce_control",
    "bounce_threshold",
    "complaint_threshold",
    "pause_hours",
)
INSERT_ACCOUNT = f"""
INSERT INTO accounts (name, transport, {", ".join(ACCOUNT_COLUMNS)})
VALUES ($1, $2, {", ".join(f"${i}" for i in range(3, len(ACCOUNT_COLUMNS) + 3))})
RETURNING *
"""
UPDATE_ACCOUNT = f"""
UPDATE accounts SET {", ".join(f"{c} = ${i}" for i, c in enumerate(ACCOUNT_COLUMNS, start=2))},
    updated_at = now()
WHERE account_id = $1
RETURNING *
"""
SELECT_ACCOUNT = "SELECT * FROM accounts WHERE account_id = $1"
SET_ACCOUNT_PAUSE = """
UPDATE accounts SET paused = $2, pause_reason = $3, paused_until = $4, state_at = $5
WHERE account_id = $1 AND (state_at IS NULL OR state_at <= $5)
"""
# A hold is shown until it ends; it does not order against pauses (both may be true at once).
SET_ACCOUNT_HOLD = "UPDATE accounts SET held_reason = $2, held_until = $3 WHERE account_id = $1"
SELECT_ACCOUNTS = "SELECT * FROM accounts ORDER BY account_id"
ACCOUNT_NAME_TAKEN = "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = $1)"

INSERT_SENDER_ADDRESS = """
INSERT INTO sender_addresses (account_id, name, email, reply_to) VALUES ($1, $2, $3, $4) RETURNING *
"""
SELECT_SENDER_ADDRESS = "SELECT * FROM sender_addresses WHERE sender_address_id = $1"
SELECT_SENDER_ADDRESSES = "SELECT * FROM sender_addresses ORDER BY sender_address_id"
SENDER_EMAIL_TAKEN = "SELECT EXISTS (SELECT 1 FROM sender_addresses WHERE lower(email) = lower($1))"

INSERT_CAMPAIGN = """
INSERT INTO campaigns (name, sender_address_id, subject, html, text_body, priority, tracking)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING campaign_id
"""
INSERT_CAMPAIGN_GROUPS = """
INSERT INTO campaign_groups (campaign_id, group_id, position)
SELECT $1, g.group_id, g.position FROM unnest($2::int[]) WITH ORDINALITY AS g(group_id, position)
"""
# The group ids come along in the order they were chosen (audience de-duplicates in that order).
_CAMPAIGN_COLUMNS = """
SELECT c.*, coalesce(array_agg(g.group_id ORDER BY g.position) FILTER (WHERE g.group_id IS NOT NULL),
                     '{}') AS group_ids
FROM campaigns c LEFT JOIN campaign_groups g USING (campaign_id)
"""
SELECT_CAMPAIGN = _CAMPAIGN_COLUMNS + " WHERE c.campaign_id = $1 GROUP BY c.campaign_id"
# FOR UPDATE: status changes read and write the row under its lock, so two requests cannot
# both start the same campaign.
LOCK_CAMPAIGN = "SELECT status FROM campaigns WHERE campaign_id = $1 FOR UPDATE"
SELECT_CAMPAIGNS = (
    _CAMPAIGN_COLUMNS + " GROUP BY c.campaign_id ORDER BY c.campaign_id DESC LIMIT $1 OFFSET $2"
)
SELECT_CAMPAIGNS_OF = (
    _CAMPAIGN_COLUMNS
    + " WHERE c.sender_address_id = ANY($3::int[])"
    + " GROUP BY c.campaign_id ORDER BY c.campaign_id DESC LIMIT $1 OFFSET $2"
)
SET_STATUS = """
UPDATE campaigns
SET status = $2,
    started_at = CASE WHEN $2 = 'queued' THEN now() ELSE started_at END,
    finished_at = CASE WHEN $2 IN ('completed', 'cancelled', 'failed') THEN now() ELSE finished_at END
WHERE campaign_id = $1
"""
# A resumed campaign goes back to sending, or to queued if audience has not resolved it yet.
RESUME = """
UPDATE campaigns SET status = CASE WHEN recipients IS NULL THEN 'queued' ELSE 'sending' END
WHERE campaign_id = $1
"""
# Resolution can arrive after a cancel (keep cancelled) or a failure (keep failed).
SET_RECIPIENTS = """
UPDATE campaigns
SET recipients = $2,
    status = CASE WHEN status = 'queued' THEN 'sending' ELSE status END
WHERE campaign_id = $1
"""
SET_FAILED = """
UPDATE campaigns SET status = 'failed', failure_reason = $2, finished_at = now()
WHERE campaign_id = $1 AND status NOT IN ('completed', 'cancelled', 'failed')
"""
# The first outcome of a recipient counts; a redelivered event finds the row and changes nothing.
INSERT_RESULT = """
INSERT INTO results (campaign_id, recipient_id, email, name, status, sent_at, reason, provider_message_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (campaign_id, recipient_id) DO NOTHING
RETURNING status
"""
COUNT_OUTCOME = """
UPDATE campaigns
SET sent = sent + ($2 = 'sent')::int,
    failed = failed + ($2 = 'failed')::int,
    skipped = skipped + ($2 = 'skipped')::int,
    indeterminate = indeterminate + ($2 = 'indeterminate')::int
WHERE campaign_id = $1
"""
# Completed once every resolved recipient has an outcome; a cancelled campaign stays cancelled.
COMPLETE_IF_DONE = """
UPDATE campaigns SET status = 'completed', finished_at = now()
WHERE campaign_id = $1 AND status IN ('sending', 'paused')
  AND recipients IS NOT NULL AND sent + failed + skipped + indeterminate >= recipients
"""
# The same event delivered twice is one engagement: only a first insert returns a row, and
# only then are the counters moved.
INSERT_ENGAGEMENT = """
INSERT INTO engagements (event_id, campaign_id, recipient_id, kind, url, machine, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (event_id) DO NOTHING
RETURNING true
"""
# The first open is the read date; later (or earlier, arriving late) opens only move it back.
# Returns whether the recipient had no read date before (NULL: no result yet). The CTE reads the
# row under lock, so the old value is the one this update replaces.
SET_OPENED = """
WITH old AS (
    SELECT opened_at FROM results WHERE campaign_id = $1 AND recipient_id = $2 FOR UPDATE
)
UPDATE results r SET opened_at = least(coalesce(r.opened_at, $3), $3)
FROM old WHERE r.campaign_id = $1 AND r.recipient_id = $2
RETURNING old.opened_at IS NULL
"""
# A person's click: counted on the recipient, first click dated. Returns whether it is the
# recipient's first (NULL: no result yet).
SET_CLICKED = """
WITH old AS (
    SELECT clicked_at FROM results WHERE campaign_id = $1 AND recipient_id = $2 FOR UPDATE
)
UPDATE results r SET clicks = r.clicks + 1, clicked_at = least(coalesce(r.clicked_at, $3), $3)
FROM old WHERE r.campaign_id = $1 AND r.recipient_id = $2
RETURNING old.clicked_at IS NULL
"""
# The links a recipient followed; returns whether this link is new for the recipient.
ADD_RESULT_LINK = """
INSERT INTO result_links (campaign_id, recipient_id, url, clicks, first_clicked_at)
VALUES ($1, $2, $3, 1, $4)
ON CONFLICT (campaign_id, recipient_id, url) DO UPDATE
SET clicks = result_links.clicks + 1,
    first_clicked_at = least(result_links.first_clicked_at, excluded.first_clicked_at)
RETURNING xmax = 0
"""
COUNT_LINK_CLICK = """
INSERT INTO campaign_links (campaign_id, url, clicks, unique_clickers, machine_clicks)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (campaign_id, url) DO UPDATE
SET clicks = campaign_links.clicks + excluded.clicks,
    unique_clickers = campaign_links.unique_clickers + excluded.unique_clickers,
    machine_clicks = campaign_links.machine_clicks + excluded.machine_clicks
"""
# Every engagement moves its counters in one statement (one row lock on the campaign).
COUNT_ENGAGEMENT = """
UPDATE campaigns
SET read = read + $2, opens = opens + $3, machine_opens = machine_opens + $4,
    unique_clicks = unique_clicks + $5, total_clicks = total_clicks + $6,
    machine_clicks = machine_clicks + $7
WHERE campaign_id = $1
"""
# An unsubscribe is dated once per scope: only a first request of that scope matches, so a
# redelivered or repeated one changes nothing (and announces nothing). A reason given keeps.
# `first_any`: the other scope was not set either, so the recipient is newly unsubscribed.
SET_UNSUBSCRIBED = """
UPDATE results
SET unsubscribed_campaign_at = CASE WHEN $3 = 'campaign' THEN $4 ELSE unsubscribed_campaign_at END,
    unsubscribed_all_at = CASE WHEN $3 = 'all' THEN $4 ELSE unsubscribed_all_at END,
    unsubscribe_reason = coalesce(nullif($5, ''), unsubscribe_reason)
WHERE campaign_id = $1 AND recipient_id = $2
  AND CASE WHEN $3 = 'campaign' THEN unsubscribed_campaign_at IS NULL ELSE unsubscribed_all_at IS NULL END
RETURNING email,
    CASE WHEN $3 = 'campaign' THEN unsubscribed_all_at IS NULL
         ELSE unsubscribed_campaign_at IS NULL END AS first_any
"""
COUNT_UNSUBSCRIBE = """
UPDATE campaigns
SET unsubscribed = unsubscribed + $3::int,
    unsubscribed_campaign = unsubscribed_campaign + ($2 = 'campaign')::int,
    unsubscribed_all = unsubscribed_all + ($2 = 'all')::int
WHERE campaign_id = $1
"""
# A recipient bounces once in the totals, dated by its first bounce whatever the arrival order;
# a permanent bounce's details override a transient one's. Returns whether it is the
# recipient's first bounce (NULL: no result yet).
SET_BOUNCED = """
WITH old AS (
    SELECT bounced_at FROM results WHERE campaign_id = $1 AND recipient_id = $2 FOR UPDATE
)
UPDATE results r
SET bounced_at = least(coalesce(r.bounced_at, $3), $3),
    bounce_kind = CASE WHEN r.bounce_kind IS NULL OR $4 = 'permanent' THEN $4 ELSE r.bounce_kind END,
    bounce_subtype = CASE WHEN r.bounce_kind IS NULL OR $4 = 'permanent' THEN $5 ELSE r.bounce_subtype END,
    bounce_diagnostic = CASE WHEN r.bounce_kind IS NULL OR $4 = 'permanent' THEN $6
                             ELSE r.bounce_diagnostic END
FROM old WHERE r.campaign_id = $1 AND r.recipient_id = $2
RETURNING old.bounced_at IS NULL
"""
COUNT_BOUNCE = "UPDATE campaigns SET bounced = bounced + 1 WHERE campaign_id = $1"
# The first complaint of a recipient dates it; returns whether it is the first (NULL: no result).
SET_COMPLAINED = """
WITH old AS (
    SELECT complained_at FROM results WHERE campaign_id = $1 AND recipient_id = $2 FOR UPDATE
)
UPDATE results r SET complained_at = least(coalesce(r.complained_at, $3), $3)
FROM old WHERE r.campaign_id = $1 AND r.recipient_id = $2
RETURNING old.complained_at IS NULL
"""
COUNT_COMPLAINT = "UPDATE campaigns SET complained = complained + 1 WHERE campaign_id = $1"
RESULT_EXISTS = "SELECT EXISTS (SELECT 1 FROM results WHERE campaign_id = $1 AND recipient_id = $2)"
# Keyset paging on recipient_id: constant time whatever the page number. The filters are fixed
# fragments (see ResultFilter) ANDed in; the clicked links come from result_links' primary key.
SELECT_RESULTS = """
SELECT r.recipient_id, r.email, r.name, r.status, r.sent_at, r.opened_at, r.reason,
       r.clicked_at, r.clicks, r.unsubscribed_campaign_at, r.unsubscribed_all_at,
       r.unsubscribe_reason, r.bounced_at, r.bounce_kind, r.bounce_subtype, r.bounce_diagnostic,
       r.complained_at,
       ARRAY(SELECT l.url FROM result_links l
             WHERE l.campaign_id = r.campaign_id AND l.recipient_id = r.recipient_id
             ORDER BY l.first_clicked_at, l.url) AS urls
FROM results r
WHERE r.campaign_id = $1 AND r.recipient_id > $2 {filters}
ORDER BY r.recipient_id
LIMIT $3
"""
# A page filtered by a name or e-mail term is planned for the term it has: asyncpg prepares each
# statement once per connection, and after five runs PostgreSQL may keep a generic plan, which
# cannot tell a term found once from one in every fifth row; measured at a million recipients,
# "bounced at @empresa" then took the trigram bitmap of 200,000 rows (290 ms) instead of walking
# the bounced index (10 ms). Transaction-scoped, so the pooled connection is left as it was.
CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"
# The derived statuses a page may be filtered by, each a fixed condition matching a partial index.
STATUS_CONDITIONS = {
    "sent": "r.status = 'sent'",
    "failed": "r.status = 'failed'",
    "skipped": "r.status = 'skipped'",
    "indeterminate": "r.status = 'indeterminate'",
    "read": "r.opened_at IS NOT NULL",
    "unread": "r.status = 'sent' AND r.opened_at IS NULL",
    "clicked": "r.clicked_at IS NOT NULL",
    "unsubscribed": "(r.unsubscribed_campaign_at IS NOT NULL OR r.unsubscribed_all_at IS NOT NULL)",
    "unsubscribed_campaign": "r.unsubscribed_campaign_at IS NOT NULL",
    "unsubscribed_all": "r.unsubscribed_all_at IS NOT NULL",
    "bounced": "r.bounced_at IS NOT NULL",
    "complained": "r.complained_at IS NOT NULL",
}
# Clicks per link, most clicked first.
SELECT_LINKS = """
SELECT url, clicks, unique_clickers, machine_clicks FROM campaign_links
WHERE campaign_id = $1
ORDER BY clicks DESC, url
LIMIT $2
"""
# A test send is a campaign of its own that the console's list leaves out.
SET_TEST_ORIGIN = "UPDATE campaigns SET origin = 'test' WHERE campaign_id = $1"
SET_SENDER = "UPDATE campaigns SET sender_address_id = $2 WHERE campaign_id = $1"
CLEAR_CAMPAIGN_GROUPS = "DELETE FROM campaign_groups WHERE campaign_id = $1"
SELECT_ATTACHMENTS = """
SELECT key, filename, content_type, inline, content_id FROM campaign_attachments
WHERE campaign_id = $1 ORDER BY position
"""
CLEAR_ATTACHMENTS = "DELETE FROM campaign_attachments WHERE campaign_id = $1"
INSERT_ATTACHMENTS = """
INSERT INTO campaign_attachments (campaign_id, position, key, filename, content_type, inline, content_id)
SELECT $1, a.position, a.key, a.filename, a.content_type, a.inline, a.content_id
FROM unnest($2::text[], $3::text[], $4::text[], $5::bool[], $6::text[])
     WITH ORDINALITY AS a(key, filename, content_type, inline, content_id, position)
"""
UPDATE_DRAFT = """
UPDATE campaigns
SET name = coalesce($2, name), subject = coalesce($3, subject), html = coalesce($4, html),
    text_body = CASE WHEN $5 THEN $6 ELSE text_body END, priority = coalesce($7, priority),
    tracking = coalesce($8, tracking)
WHERE campaign_id = $1
"""


def _like(term: str) -> str:
    """A substring pattern for ILIKE with the user's wildcards taken literally."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class ResultFilter:
    """What a results page or export is narrowed to: `name` and `email` are case-insensitive
    substrings, `q` either of them, `status` one of STATUS_CONDITIONS."""

    name: str | None = None
    email: str | None = None
    q: str | None = None
    status: str | None = None

    def sql(self, first_parameter: int) -> tuple[str, list[Any]]:
        """The AND-ed conditions (numbered from `first_parameter`) and their values."""
        conditions: list[str] = []
        values: list[Any] = []

        def parameter(value: Any) -> str:
            values.append(value)
            return f"${first_parameter + len(values) - 1}"

        if self.name:
            conditions.append(f"r.name ILIKE {parameter(_like(self.name))}")
        if self.email:
            conditions.append(f"r.email ILIKE {parameter(_like(self.email))}")
        if self.q:
            pattern = parameter(_like(self.q))
            conditions.append(f"(r.name ILIKE {pattern} OR r.email ILIKE {pattern})")
        if self.status:
            conditions.append(STATUS_CONDITIONS[self.status])
        return "".join(f" AND {c}" for c in conditions), values


class AccountRepository:
    """Sending accounts."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create(self, values: dict[str, Any]) -> Account:
        """Store a new account; `values` holds its name, transport and ACCOUNT_COLUMNS by name."""
        row = await self._conn.fetchrow(
            INSERT_ACCOUNT, values["name"], values["transport"], *(values.get(c) for c in ACCOUNT_COLUMNS)
        )
        return Account.model_validate(dict(row))

    async def update(self, account_id: int, values: dict[str, Any]) -> Account:
        """Store an account's new settings; `values` holds every one of ACCOUNT_COLUMNS by name."""
        row = await self._conn.fetchrow(UPDATE_ACCOUNT, account_id, *(values[c] for c in ACCOUNT_COLUMNS))
        return Account.model_validate(dict(row))

    async def set_paused(
        self, account_id: int, paused: bool, reason: str, until: datetime | None, at: datetime
    ) -> None:
        """Record that the account's senders paused or resumed (unless a newer change is stored)."""
        await self._conn.execute(SET_ACCOUNT_PAUSE, account_id, paused, reason, until, at)

    async def set_held(self, account_id: int, reason: str, until: datetime) -> None:
        """Record that the account waits (quota, warm-up, throttling) until `until`."""
        await self._conn.execute(SET_ACCOUNT_HOLD, account_id, reason, until)

    async def name_taken(self, name: str) -> bool:
        """Whether an account already has this name."""
        return bool(await self._conn.fetchval(ACCOUNT_NAME_TAKEN, name))

    async def get(self, account_id: int) -> Account:
        """The account; NotFound if there is none."""
        row = await self._conn.fetchrow(SELECT_ACCOUNT, account_id)
        if row is None:
            raise NotFound(f"account {account_id} not found")
        return Account.model_validate(dict(row))

    async def list(self) -> list[Account]:
        """Every account, oldest first."""
        return [Account.model_validate(dict(r)) for r in await self._conn.fetch(SELECT_ACCOUNTS)]


class SenderAddressRepository:
    """Sender addresses (From identities)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create(self, account_id: int, name: str, email: str, reply_to: str | None) -> SenderAddress:
        """Store a new sender address."""
        row = await self._conn.fetchrow(INSERT_SENDER_ADDRESS, account_id, name, email, reply_to)
        return SenderAddress.model_validate(dict(row))

    async def email_taken(self, email: str) -> bool:
        """Whether a sender address already uses this e-mail (case-insensitive)."""
        return bool(await self._conn.fetchval(SENDER_EMAIL_TAKEN, email))

    async def get(self, sender_address_id: int) -> SenderAddress:
        """The sender address; NotFound if there is none."""
        row = await self._conn.fetchrow(SELECT_SENDER_ADDRESS, sender_address_id)
        if row is None:
            raise NotFound(f"sender address {sender_address_id} not found")
        return SenderAddress.model_validate(dict(row))

    async def list(self) -> list[SenderAddress]:
        """Every sender address."""
        return [
            SenderAddress.model_validate(dict(r)) for r in await self._conn.fetch(SELECT_SENDER_ADDRESSES)
        ]


class CampaignRepository:
    """Campaigns, their status and totals."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create(
        self,
        *,
        name: str,
        sender_address_id: int,
        group_ids: list[int],
        subject: str,
        html: str,
        text: str | None,
        priority: int,
        tracking: str = "full",
    ) -> Campaign:
        """Store a new draft campaign with its groups."""
        campaign_id = await self._conn.fetchval(
            INSERT_CAMPAIGN, name, sender_address_id, subject, html, text, priority, tracking
        )
        await self._conn.execute(INSERT_CAMPAIGN_GROUPS, campaign_id, group_ids)
        return await self.get(campaign_id)

    async def get(self, campaign_id: int) -> Campaign:
        """The campaign; NotFound if there is none."""
        row = await self._conn.fetchrow(SELECT_CAMPAIGN, campaign_id)
        if row is None:
            raise NotFound(f"campaign {campaign_id} not found")
        return Campaign.model_validate(dict(row))

    async def list(self, limit: int, offset: int) -> list[Campaign]:
        """Campaigns, newest first."""
        rows = await self._conn.fetch(SELECT_CAMPAIGNS, limit, offset)
        return [Campaign.model_validate(dict(r)) for r in rows]

    async def list_of(
        self, sender_address_ids: Sequence[int], limit: int, offset: int
    ) -> builtins.list[Campaign]:
        """Campaigns of these sender addresses, newest first."""
        rows = await self._conn.fetch(SELECT_CAMPAIGNS_OF, limit, offset, list(sender_address_ids))
        return [Campaign.model_validate(dict(r)) for r in rows]

    async def lock_status(self, campaign_id: int) -> Status:
        """The campaign's status, locking its row until the transaction ends."""
        status = await self._conn.fetchval(LOCK_CAMPAIGN, campaign_id)
        if status is None:
            raise NotFound(f"campaign {campaign_id} not found")
        return Status(status)

    async def set_status(self, campaign_id: int, status: Status) -> None:
        """Change the status, stamping the start or end date it implies."""
        await self._conn.execute(SET_STATUS, campaign_id, status.value)

    async def resume(self, campaign_id: int) -> None:
        """A paused campaign goes back to where it was: queued or sending."""
        await self._conn.execute(RESUME, campaign_id)

    async def set_recipients(self, campaign_id: int, recipients: int) -> None:
        """Record how many recipients audience queued; a queued campaign is now sending."""
        await self._conn.execute(SET_RECIPIENTS, campaign_id, recipients)

    async def fail(self, campaign_id: int, reason: str) -> None:
        """Mark an unfinished campaign failed with the reason."""
        await self._conn.execute(SET_FAILED, campaign_id, reason)

    async def record_outcome(
        self,
        event: DeliveryEvent,
        status: str,
        *,
        sent_at: datetime | None = None,
        reason: str | None = None,
        provider_message_id: str | None = None,
    ) -> bool:
        """Record a recipient's outcome and count it; False if it was already recorded."""
        inserted = await self._conn.fetchval(
            INSERT_RESULT,
            event.campaign_id,
            event.recipient_id,
            event.email,
            event.name,
            status,
            sent_at,
            reason,
            provider_message_id,
        )
        if inserted is None:
            return False
        await self._conn.execute(COUNT_OUTCOME, event.campaign_id, status)
        return True

    async def record_engagement(self, event: MessageOpened | LinkClicked) -> bool:
        """Keep an open or click once per event and count it: a person's engagement of a known
        recipient dates its reading or first click; machine and anonymous ones are counted apart.
        False if the event was kept before; NotFound if a person's engagement overtook the
        recipient's outcome (the caller retries later)."""
        if isinstance(event, MessageOpened):
            kind, url, at = "open", None, event.opened_at
        else:
            kind, url, at = "click", event.url, event.clicked_at
        kept = await self._conn.fetchval(
            INSERT_ENGAGEMENT,
            event.event_id,
            event.campaign_id,
            event.recipient_id,
            kind,
            url,
            event.machine,
            at,
        )
        if kept is None:
            return False
        human = not event.machine
        identified = human and event.recipient_id != ANONYMOUS
        first = new_link = False
        if identified:
            first = await self._conn.fetchval(
                SET_OPENED if kind == "open" else SET_CLICKED, event.campaign_id, event.recipient_id, at
            )
            if first is None:
                raise NotFound(
                    f"no result for recipient {event.recipient_id} of campaign {event.campaign_id}"
                )
            if url is not None:
                new_link = await self._conn.fetchval(
                    ADD_RESULT_LINK, event.campaign_id, event.recipient_id, url, at
                )
        if url is not None:
            await self._conn.execute(
                COUNT_LINK_CLICK, event.campaign_id, url, int(human), int(new_link), int(event.machine)
            )
        opened = kind == "open"
        await self._conn.execute(
            COUNT_ENGAGEMENT,
            event.campaign_id,
            int(opened and first),
            int(opened and human),
            int(opened and event.machine),
            int(not opened and first),
            int(not opened and human),
            int(not opened and event.machine),
        )
        return True

    async def record_unsubscribe(
        self, campaign_id: int, recipient_id: int, scope: str, reason: str, at: datetime
    ) -> str | None:
        """Date a recipient's unsubscribe of `scope` ("campaign" or "all") and count it; return its
        address if this is the first of that scope, None if it was already recorded. NotFound: no
        result yet."""
        row = await self._conn.fetchrow(SET_UNSUBSCRIBED, campaign_id, recipient_id, scope, at, reason)
        if row is None:
            if not await self._conn.fetchval(RESULT_EXISTS, campaign_id, recipient_id):
                raise NotFound(f"no result for recipient {recipient_id} of campaign {campaign_id}")
            return None
        await self._conn.execute(COUNT_UNSUBSCRIBE, campaign_id, scope, bool(row["first_any"]))
        email: str = row["email"]
        return email

    async def record_bounce(self, event: MessageBounced) -> bool:
        """Mark the recipient bounced (counted once; a permanent bounce's details win); False if it
        had bounced before. NotFound: the bounce overtook the recipient's outcome."""
        first = await self._conn.fetchval(
            SET_BOUNCED,
            event.campaign_id,
            event.recipient_id,
            event.bounced_at,
            event.kind,
            event.subtype,
            event.diagnostic,
        )
        if first is None:
            raise NotFound(f"no result for recipient {event.recipient_id} of campaign {event.campaign_id}")
        if first:
            await self._conn.execute(COUNT_BOUNCE, event.campaign_id)
        return bool(first)

    async def record_complaint(self, event: MessageComplained) -> bool:
        """Mark the recipient as having complained (counted once); False if it had before.
        NotFound: the complaint overtook the recipient's outcome."""
        first = await self._conn.fetchval(
            SET_COMPLAINED, event.campaign_id, event.recipient_id, event.complained_at
        )
        if first is None:
            raise NotFound(f"no result for recipient {event.recipient_id} of campaign {event.campaign_id}")
        if first:
            await self._conn.execute(COUNT_COMPLAINT, event.campaign_id)
        return bool(first)

    async def update_draft(self, campaign_id: int, changes: dict[str, Any]) -> None:
        """Change a draft's content or settings; keys absent from `changes` keep their value."""
        await self._conn.execute(
            UPDATE_DRAFT,
            campaign_id,
            changes.get("name"),
            changes.get("subject"),
            changes.get("html"),
            "text" in changes,
            changes.get("text"),
            changes.get("priority"),
            changes.get("tracking"),
        )

    async def mark_test(self, campaign_id: int) -> None:
        """Make the campaign a test send."""
        await self._conn.execute(SET_TEST_ORIGIN, campaign_id)

    async def set_sender(self, campaign_id: int, sender_address_id: int) -> None:
        """Change a draft's sender address."""
        await self._conn.execute(SET_SENDER, campaign_id, sender_address_id)

    async def set_groups(self, campaign_id: int, group_ids: Sequence[int]) -> None:
        """Replace a draft's groups (in the order given)."""
        await self._conn.execute(CLEAR_CAMPAIGN_GROUPS, campaign_id)
        await self._conn.execute(INSERT_CAMPAIGN_GROUPS, campaign_id, list(group_ids))

    async def complete_if_done(self, campaign_id: int) -> bool:
        """Mark the campaign completed if every recipient has an outcome."""
        return str(await self._conn.execute(COMPLETE_IF_DONE, campaign_id)) == "UPDATE 1"


class AttachmentRepository:
    """The file-store files a campaign sends (attachments and inline images)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def of(self, campaign_id: int) -> list[AttachmentRef]:
        """The campaign's files, in the order they were chosen."""
        rows = await self._conn.fetch(SELECT_ATTACHMENTS, campaign_id)
        return [AttachmentRef.model_validate(dict(r)) for r in rows]

    async def replace(self, campaign_id: int, files: Sequence[AttachmentRef]) -> None:
        """Set the campaign's files."""
        await self._conn.execute(CLEAR_ATTACHMENTS, campaign_id)
        if files:
            await self._conn.execute(
                INSERT_ATTACHMENTS,
                campaign_id,
                [f.key for f in files],
                [f.filename for f in files],
                [f.content_type for f in files],
                [f.inline for f in files],
                [f.content_id for f in files],
            )


class ResultRepository:
    """Per-recipient results of campaigns."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def page(
        self, campaign_id: int, after: int, limit: int, where: ResultFilter | None = None
    ) -> list[Result]:
        """Results with recipient_id greater than `after` matching `where`, in recipient order."""
        filters, values = (where or ResultFilter()).sql(4)
        query = SELECT_RESULTS.format(filters=filters)
        if not values:
            # No term: every condition is in the statement's text, and a generic plan fits all.
            rows = await self._conn.fetch(query, campaign_id, after, limit)
        else:
            # A transaction of its own (a savepoint in the caller's), only for SET LOCAL.
            async with self._conn.transaction():
                await self._conn.execute(CUSTOM_PLANS)
                rows = await self._conn.fetch(query, campaign_id, after, limit, *values)
        return [Result.model_validate(dict(r)) for r in rows]

    async def links(self, campaign_id: int, limit: int) -> list[LinkClicks]:
        """The campaign's clicked links, most clicked first."""
        rows = await self._conn.fetch(SELECT_LINKS, campaign_id, limit)
        return [LinkClicks.model_validate(dict(r)) for r in rows]
