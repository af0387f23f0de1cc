"""The audit log of administrative actions: every role change, removal, account edit, brake
override... is recorded with who, when, what and details, in the transaction of the action itself
(so a rolled-back action leaves no entry)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.campaign.console.identity import Caller
from services.campaign.console.repository import AuditRepository, User


async def audit(
    conn: asyncpg.Connection,
    actor: User | Caller | None,
    action: str,
    target: str | None = None,
    **details: Any,
) -> None:
    """Record `action` (a dotted name such as "user.role_changed") on `target` (e.g. "user:7") by
    `actor` (a console user, an API caller, or None for the system), with JSON-able `details`."""
    user = actor.user if isinstance(actor, Caller) else actor
    if user is not None:
        user_id, name = user.user_id, user.email
    else:
        user_id, name = None, "service" if isinstance(actor, Caller) else "system"
    await AuditRepository(conn).add(user_id, name, action, target, details)
