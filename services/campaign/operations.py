"""Operator actions on campaigns, shared by the JSON API and the console: create, edit a draft,
start, pause, resume, cancel, duplicate. Each checks that the caller may act on the campaign's
sender address (`allowed`), runs in one transaction and queues its event in the outbox.

A campaign the caller may not act on is NotFound, as if it did not exist (a normal user does not
learn which other campaigns there are). Bad input raises InvalidField naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from services.campaign import lifecycle, ses_identity
from services.campaign import repository as campaign_repo
from services.campaign.audience_client import AudienceClient
from services.campaign.console.audit import audit
from services.campaign.console.identity import Caller
from services.campaign.console.repository import User
from services.campaign.models import Campaign, CampaignChange, CampaignIn
from shared import outbox
from shared.contracts import (
    AttachmentRef,
    CampaignCancelled,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    Recipient,
    SenderIdentity,
)
from shared.contracts.events import Event
from shared.crypto import SecretBox
from shared.errors import Conflict, NotFound
from shared.personalisation import (
    BUILT_IN_VARIABLES,
    TemplateProblem,
    compile_html,
    compile_plain,
    referenced_variables,
)
from shared.service import Runtime

Allowed = Callable[[int], bool]
"""Whether the caller may act on campaigns of this sender address."""
# Who starts, pauses, resumes or cancels a campaign: checked (their senders) and audited.
Actor = User | Caller


def everyone(_: int) -> bool:
    """The rule of callers who may act on every campaign (services, administrators)."""
    return True


class InvalidField(Exception):
    """A field of the request is wrong: `field` names it, `message` says why (in English)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_templates(subject: str | None, html: str | None, text: str | None) -> None:
    """Compile the given templates as sending will; InvalidField on the first that fails."""
    for field, source, compile_ in (
        ("subject", subject, lambda s: compile_plain(s, "subject")),
        ("html", html, compile_html),
        ("text", text, lambda s: compile_plain(s, "text")),
    ):
        if source is None:
            continue
        try:
            compile_(source)
        except TemplateProblem as exc:
            raise InvalidField(field, str(exc)) from exc


async def check_groups(audience: AudienceClient, group_ids: Sequence[int]) -> None:
    """InvalidField when audience does not know a group (AudienceUnavailable when it is away)."""
    missing = await audience.missing_groups(list(group_ids))
    if missing:
        raise InvalidField("group_ids", f"unknown group(s): {', '.join(map(str, missing))}")


async def get(conn: asyncpg.Connection, campaign_id: int, allowed: Allowed) -> Campaign:
    """The campaign, if the caller may see it (NotFound otherwise)."""
    campaign = await campaign_repo.CampaignRepository(conn).get(campaign_id)
    if not allowed(campaign.sender_address_id):
        raise NotFound(f"campaign {campaign_id} not found")
    return campaign


async def _check_sender(conn: asyncpg.Connection, sender_address_id: int, allowed: Allowed) -> None:
    try:
        await campaign_repo.SenderAddressRepository(conn).get(sender_address_id)
    except NotFound as exc:
        raise InvalidField("sender_address_id", f"sender address {sender_address_id} does not exist") from exc
    if not allowed(sender_address_id):
        raise InvalidField("sender_address_id", f"you may not send as sender address {sender_address_id}")


async def create(
    runtime: Runtime,
    body: CampaignIn,
    allowed: Allowed,
    attachments: Sequence[AttachmentRef] = (),
) -> Campaign:
    """Create a draft campaign; templates, sender address and groups are checked first."""
    check_templates(body.subject, body.html, body.text)
    await check_groups(runtime.state["audience"], body.group_ids)
    async with runtime.transaction() as conn:
        await _check_sender(conn, body.sender_address_id, allowed)
        campaigns = campaign_repo.CampaignRepository(conn)
        campaign = await campaigns.create(
            name=body.name,
            sender_address_id=body.sender_address_id,
            group_ids=body.group_ids,
            subject=body.subject,
            html=body.html,
            text=body.text,
            priority=body.priority,
            tracking=body.tracking,
        )
        if attachments:
            await campaign_repo.AttachmentRepository(conn).replace(campaign.campaign_id, attachments)
        return campaign


async def edit_draft(
    runtime: Runtime,
    campaign_id: int,
    changes: CampaignChange,
    allowed: Allowed,
    *,
    sender_address_id: int | None = None,
    group_ids: Sequence[int] | None = None,
    attachments: Sequence[AttachmentRef] | None = None,
) -> Campaign:
    """Change a draft (Conflict once it has started). The console may also change its sender
    address, groups and files; None keeps them."""
    check_templates(changes.subject, changes.html, changes.text)
    if group_ids is not None:
        await check_groups(runtime.state["audience"], group_ids)
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        await get(conn, campaign_id, allowed)
        if await campaigns.lock_status(campaign_id) != lifecycle.Status.DRAFT:
            raise Conflict("only a draft campaign can be edited")
        values: dict[str, Any] = changes.model_dump(exclude_unset=True)
        await campaigns.update_draft(campaign_id, values)
        if sender_address_id is not None:
            await _check_sender(conn, sender_address_id, allowed)
            await campaigns.set_sender(campaign_id, sender_address_id)
        if group_ids is not None:
            await campaigns.set_groups(campaign_id, list(group_ids))
        if attachments is not None:
            await campaign_repo.AttachmentRepository(conn).replace(campaign_id, attachments)
        return await campaigns.get(campaign_id)


async def _check_identity(runtime: Runtime, campaign_id: int, allowed: Allowed) -> None:
    """Conflict if SES would refuse the campaign's sender (an unverified address or domain), or
    if SES cannot be asked now: better refused at the start than failing every message."""
    async with runtime.pool.acquire() as conn:
        campaign = await get(conn, campaign_id, allowed)
        sender = await campaign_repo.SenderAddressRepository(conn).get(campaign.sender_address_id)
        account = await campaign_repo.AccountRepository(conn).get(sender.account_id)
    # Outside the transaction: an AWS call must not hold the campaign's row lock.
    try:
        status = await ses_identity.check(account, sender.email, SecretBox(runtime.settings.SECRET_KEYS))
    except ses_identity.IdentityUnavailable as exc:
        raise Conflict(f"{exc}; try again later") from exc
    if not status.may_send:
        raise Conflict(status.refusal())


async def start(runtime: Runtime, campaign_id: int, actor: Actor) -> Campaign:
    """Queue a draft campaign for sending (Conflict if it is not a draft, its account is off or
    SES would refuse its sender)."""
    await _check_identity(runtime, campaign_id, actor.may_use_sender)
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        await get(conn, campaign_id, actor.may_use_sender)
        new_status = lifecycle.after("start", await campaigns.lock_status(campaign_id))
        campaign = await campaigns.get(campaign_id)
        sender = await campaign_repo.SenderAddressRepository(conn).get(campaign.sender_address_id)
        account = await campaign_repo.AccountRepository(conn).get(sender.account_id)
        if not account.active:
            raise Conflict(f"the sending account {account.name!r} is inactive")
        attachments = await campaign_repo.AttachmentRepository(conn).of(campaign_id)
        await campaigns.set_status(campaign_id, new_status)
        await outbox.add_event(
            conn,
            CampaignStarted(
                campaign_id=campaign_id,
                account_id=account.account_id,
                sender=SenderIdentity(name=sender.name, email=sender.email, reply_to=sender.reply_to),
                subject=campaign.subject,
                html=campaign.html,
                text=campaign.text_body,
                group_ids=campaign.group_ids,
                priority=campaign.priority,
                tracking=campaign.tracking,
                attachments=attachments,
            ),
        )
        await audit(conn, actor, "campaign.started", f"campaign:{campaign_id}")
        return await campaigns.get(campaign_id)


async def cancel(runtime: Runtime, campaign_id: int, actor: Actor) -> Campaign:
    """Cancel an unfinished campaign: what is not sent yet is skipped (Conflict if finished)."""
    return await _change(runtime, campaign_id, actor, "cancel", CampaignCancelled(campaign_id=campaign_id))


async def pause(runtime: Runtime, campaign_id: int, actor: Actor) -> Campaign:
    """Stop sending a queued or sending campaign before its next message (Conflict otherwise)."""
    return await _change(runtime, campaign_id, actor, "pause", CampaignPaused(campaign_id=campaign_id))


async def resume(runtime: Runtime, campaign_id: int, actor: Actor) -> Campaign:
    """Go on sending a paused campaign where it stopped (Conflict if it is not paused)."""
    return await _change(runtime, campaign_id, actor, "resume", CampaignResumed(campaign_id=campaign_id))


# The audit log's name of each change.
_AUDITED = {"cancel": "campaign.cancelled", "pause": "campaign.paused", "resume": "campaign.resumed"}


async def _change(runtime: Runtime, campaign_id: int, actor: Actor, action: str, event: Event) -> Campaign:
    """Move the campaign's status by `action` (Conflict if its status does not allow it), tell
    the other services `event` and record who did it, in one transaction."""
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        await get(conn, campaign_id, actor.may_use_sender)
        new_status = lifecycle.after(action, await campaigns.lock_status(campaign_id))
        if action == "resume":
            # Back to where it was before the pause (queued or sending), which the repository knows.
            await campaigns.resume(campaign_id)
        else:
            await campaigns.set_status(campaign_id, new_status)
        await outbox.add_event(conn, event)
        await audit(conn, actor, _AUDITED[action], f"campaign:{campaign_id}")
        return await campaigns.get(campaign_id)


async def duplicate(runtime: Runtime, campaign_id: int, allowed: Allowed, name: str) -> Campaign:
    """A new draft with the campaign's content, sender, groups and files, named `name`."""
    async with runtime.transaction() as conn:
        original = await get(conn, campaign_id, allowed)
        files = campaign_repo.AttachmentRepository(conn)
        copy = await campaign_repo.CampaignRepository(conn).create(
            name=name[:300],
            sender_address_id=original.sender_address_id,
            group_ids=original.group_ids,
            subject=original.subject,
            html=original.html,
            text=original.text_body,
            priority=original.priority,
            tracking=original.tracking,
        )
        await files.replace(copy.campaign_id, await files.of(campaign_id))
        return copy


async def test_send(
    runtime: Runtime,
    body: CampaignIn,
    allowed: Allowed,
    to_email: str,
    to_name: str,
    attachments: Sequence[AttachmentRef] = (),
) -> Campaign:
    """Send the campaign's content to one address (the user's own) through the whole pipeline,
    as a one-recipient campaign of origin 'test' with inline recipients, the way API sends do.
    Custom fields the templates use are filled with their own names in brackets."""
    check_templates(body.subject, body.html, body.text)
    sources = [body.subject, body.html, *([body.text] if body.text else [])]
    fields = {name: f"[{name}]" for name in referenced_variables(*sources) - BUILT_IN_VARIABLES}
    async with runtime.transaction() as conn:
        await _check_sender(conn, body.sender_address_id, allowed)
        campaigns = campaign_repo.CampaignRepository(conn)
        campaign = await campaigns.create(
            name=f"[Teste] {body.name}"[:300],
            sender_address_id=body.sender_address_id,
            group_ids=[],
            subject=body.subject,
            html=body.html,
            text=body.text,
            priority=9,
            tracking=body.tracking,
        )
        await campaigns.mark_test(campaign.campaign_id)
        sender = await campaign_repo.SenderAddressRepository(conn).get(body.sender_address_id)
        account = await campaign_repo.AccountRepository(conn).get(sender.account_id)
        if not account.active:
            raise Conflict(f"the sending account {account.name!r} is inactive")
        await campaigns.set_status(campaign.campaign_id, lifecycle.after("start", lifecycle.Status.DRAFT))
        await outbox.add_event(
            conn,
            CampaignStarted(
                campaign_id=campaign.campaign_id,
                account_id=account.account_id,
                sender=SenderIdentity(name=sender.name, email=sender.email, reply_to=sender.reply_to),
                subject=body.subject,
                html=body.html,
                text=body.text,
                group_ids=[],
                priority=9,
                tracking=body.tracking,
                attachments=list(attachments),
                recipients=[Recipient(recipient_id=1, email=to_email, name=to_name, fields=fields)],
            ),
        )
        return await campaigns.get(campaign.campaign_id)
