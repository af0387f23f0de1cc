"""API sends: a request of another system (HTTP or RabbitMQ) becomes a campaign of origin "api".

Both channels call `create`, so the rules are the same:

- Idempotency: (system, idempotency key) names one send. A repeat with the same request (its
  canonical JSON's SHA-256) returns that send; the same key with another request is a conflict.
  An advisory lock on the pair serialises concurrent repeats.
- Sender: named directly (`sender`, only one of the caller's scope: the key's senders over HTTP,
  those of the system's active keys over RabbitMQ) or routed by the rules (system, tenant,
  message type) an admin set; an SES sender must be a verified identity (address or domain).
- Content: subject + html (+ text), or a stored template; `variables` are bound by a
  `{% set %}` prefix on each template, so the sender renders them like any field, and every
  check (compile, variables each recipient has, a sample render) runs before anything is stored.
- Nothing half-created: the campaign, the send and its events commit in one transaction. The
  reads that leave the service (audience for a group, SES for the identity) happen before it.

Inline recipients and audience: the recipients travel in `CampaignStarted.recipients`, and
audience stages them like one more group. We chose that over creating a static group through
audience's API: a group made by an HTTP call cannot commit with the campaign (a failure after
it leaves an orphan group, a retry makes a second one), while the event is written in the same
transaction through the outbox. At most 1000 recipients keep the event small; larger audiences
belong in a group, which a send names by `group_id`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.campaign import api_repository as api_repo
from services.campaign import lifecycle, ses_identity
from services.campaign import repository as campaign_repo
from services.campaign.audience_client import AudienceClient, AudienceUnavailable
from shared import outbox
from shared.contracts import (
    CampaignStarted,
    Recipient,
    SendAccepted,
    SenderIdentity,
    SendSpec,
    utc_now,
)
from shared.crypto import SecretBox
from shared.personalisation import (
    BUILT_IN_VARIABLES,
    UNSUBSCRIBE_VARIABLE,
    TemplateProblem,
    compile_html,
    compile_plain,
    referenced_variables,
    render,
)
from shared.service import Runtime

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# How often the scheduler looks for scheduled sends whose time has come, and how many per look.
SCHEDULER_INTERVAL_SECONDS = 5.0
_DUE_BATCH = 50


class SendProblem(Exception):
    """A send request refused: `code` for machines, `reason` for people, `status` for HTTP."""

    def __init__(self, code: str, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Caller:
    """Who asks: the calling system, the senders it may name, and over which channel."""

    system: str
    allowed_senders: frozenset[int]
    channel: str  # "http" | "amqp"
    api_key_id: int | None = None


@dataclass(frozen=True)
class Outcome:
    """The send, and whether this request created it (False: a repeat of an earlier one)."""

    send: api_repo.ApiSend
    created: bool


def request_digest(spec: SendSpec) -> bytes:
    """SHA-256 of the request's canonical JSON (only the fields of `SendSpec`)."""
    body = spec.model_dump(mode="json", include=set(SendSpec.model_fields))
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


def _jinja_literal(value: str) -> str:
    # A JSON string is a Jinja string literal: Jinja unescapes \" \\ \n \uXXXX alike.
    return json.dumps(value, ensure_ascii=True)


def bind_variables(source: str, variables: dict[str, str]) -> str:
    """The template with the send's variables bound ahead of it (they win over a recipient's
    fields of the same name)."""
    prefix = "".join(
        f"{{% set {name} = {_jinja_literal(value)} %}}" for name, value in sorted(variables.items())
    )
    return prefix + source


@dataclass(frozen=True)
class Content:
    """What the campaign will send, variables bound, checked."""

    subject: str
    html: str
    text: str | None
    template_key: str | None


async def _content(conn: asyncpg.Connection, spec: SendSpec) -> Content:
    subject, html, text = spec.subject, spec.html, spec.text
    if spec.template is not None:
        template = await api_repo.TemplateRepository(conn).get(spec.template)
        if template is None:
            raise SendProblem("unknown_template", f"there is no template {spec.template!r}")
        subject = spec.subject or template.subject
        html, text = template.html, template.text_body
    assert subject is not None and html is not None, "SendSpec requires content"
    for name in spec.variables:
        if not _NAME.match(name) or name in BUILT_IN_VARIABLES:
            raise SendProblem(
                "invalid",
                f"variable name {name!r} is not allowed (a letter or _, then letters, digits, _; not a built-in)",
            )
    bound = Content(
        subject=bind_variables(subject, spec.variables),
        html=bind_variables(html, spec.variables),
        text=None if text is None else bind_variables(text, spec.variables),
        template_key=spec.template,
    )
    _check(bound, spec)
    return bound


def _check(content: Content, spec: SendSpec) -> None:
    """Compile, check the variables each inline recipient has, and render for one of them."""
    try:
        compiled = [
            ("subject", compile_plain(content.subject, "subject")),
            ("html", compile_html(content.html)),
            *([("text", compile_plain(content.text, "text"))] if content.text is not None else []),
        ]
        used = referenced_variables(content.subject, content.html, content.text or "") - BUILT_IN_VARIABLES
    except TemplateProblem as exc:
        raise SendProblem("invalid_template", f"template error: {exc}") from exc
    if spec.recipients is None:
        return  # a group's fields are checked by audience when it resolves the group
    for position, person in enumerate(spec.recipients, start=1):
        absent = sorted(used - set(person.fields))
        if absent:
            raise SendProblem(
                "invalid_template",
                f"the template uses '{absent[0]}', which recipient {position} ({person.email}) lacks"
                " in its fields and the send's variables",
            )
    sample = _recipients(spec)[0]
    for what, template in compiled:
        try:
            render(template, sample, what, {UNSUBSCRIBE_VARIABLE: "https://example.invalid/u"})
        except TemplateProblem as exc:
            raise SendProblem("invalid_template", f"template error: {exc}") from exc
        except Exception as exc:  # the sandbox refusing an unsafe operation, a bad filter argument
            raise SendProblem("invalid_template", f"template error: {what}: {exc}") from exc


def _recipients(spec: SendSpec) -> list[Recipient]:
    return [
        Recipient(recipient_id=i, email=str(r.email), name=r.name, fields=r.fields)
        for i, r in enumerate(spec.recipients or [], start=1)
    ]


async def _sender(conn: asyncpg.Connection, spec: SendSpec, caller: Caller) -> int:
    """The sender address the send leaves from."""
    sends = api_repo.ApiSendRepository(conn)
    if spec.sender is not None:
        sender_id = await sends.sender_by_email(str(spec.sender))
        if sender_id is None:
            raise SendProblem("unknown_sender", f"there is no sender address {spec.sender}")
        if sender_id not in caller.allowed_senders:
            raise SendProblem(
                "forbidden_sender", f"the sender address {spec.sender} is not in this key's scope", 403
            )
        return sender_id
    assert spec.message_type is not None, "SendSpec requires sender or message_type"
    routed = await api_repo.RoutingRuleRepository(conn).match(
        caller.system, spec.tenant or "", spec.message_type
    )
    if routed is None:
        tenant = f", tenant {spec.tenant!r}" if spec.tenant else ""
        raise SendProblem(
            "unknown_route",
            f"no routing rule for system {caller.system!r}{tenant}, message type {spec.message_type!r}",
        )
    return routed


async def _check_group(audience: AudienceClient, group_id: int) -> None:
    try:
        missing = await audience.missing_groups([group_id])
    except AudienceUnavailable as exc:
        raise SendProblem("unavailable", f"audience service unavailable: {exc}", 503) from exc
    if missing:
        raise SendProblem("unknown_group", f"there is no group {group_id}")


async def _check_identity(runtime: Runtime, sender_id: int) -> None:
    async with runtime.pool.acquire() as conn:
        sender = await campaign_repo.SenderAddressRepository(conn).get(sender_id)
        account = await campaign_repo.AccountRepository(conn).get(sender.account_id)
    if not account.active:
        raise SendProblem("inactive_account", f"the sending account of {sender.email} is inactive", 409)
    try:
        status = await ses_identity.check(account, sender.email, SecretBox(runtime.settings.SECRET_KEYS))
    except ses_identity.IdentityUnavailable as exc:
        raise SendProblem("unavailable", str(exc), 503) from exc
    if not status.may_send:
        raise SendProblem("unverified_sender", status.refusal())


async def create(
    runtime: Runtime, spec: SendSpec, idempotency_key: str, caller: Caller, *, accepted_event: bool = False
) -> Outcome:
    """Create (or find again) the send; raises SendProblem. `accepted_event` also queues
    `send.accepted` (the RabbitMQ channel's answer) in the same transaction."""
    digest = request_digest(spec)
    # A repeat is answered with the send it made, whatever changed since (rules, SES status).
    async with runtime.pool.acquire() as conn:
        existing = await api_repo.ApiSendRepository(conn).by_key(caller.system, idempotency_key)
    if existing is None:
        if spec.group_id is not None:
            await _check_group(runtime.state["audience"], spec.group_id)
        async with runtime.pool.acquire() as conn:
            sender_id = await _sender(conn, spec, caller)
        await _check_identity(runtime, sender_id)
    async with runtime.transaction() as conn:
        sends = api_repo.ApiSendRepository(conn)
        await sends.lock_key(caller.system, idempotency_key)
        existing = await sends.by_key(caller.system, idempotency_key)
        if existing is not None:
            if existing.request_sha256 != digest:
                raise SendProblem(
                    "idempotency_conflict",
                    "this Idempotency-Key was used for a different request; use a new key",
                    409,
                )
            if accepted_event:
                await outbox.add_event(conn, await _accepted(conn, existing))
            return Outcome(existing, created=False)
        # Routing may have changed since the read above; the sender is read again under the lock.
        sender_id = await _sender(conn, spec, caller)
        content = await _content(conn, spec)
        campaign_id = await sends.create_campaign(
            name=spec.name
            or f"API {caller.system}: {spec.message_type or spec.sender} {idempotency_key}"[:300],
            sender_address_id=sender_id,
            group_id=spec.group_id,
            subject=content.subject,
            html=content.html,
            text=content.text,
            priority=spec.priority,
            tracking=spec.tracking,
        )
        send = api_repo.ApiSend(
            send_id=uuid.uuid4(),
            system=caller.system,
            idempotency_key=idempotency_key,
            request_sha256=digest,
            campaign_id=campaign_id,
            channel=caller.channel,
            api_key_id=caller.api_key_id,
            message_type=spec.message_type,
            tenant=spec.tenant,
            template_key=content.template_key,
            recipients=[r.model_dump() for r in _recipients(spec)] if spec.recipients is not None else None,
            scheduled_at=spec.scheduled_at,
            created_at=utc_now(),
        )
        await sends.create(send)
        if spec.scheduled_at is None or spec.scheduled_at <= utc_now():
            await start(conn, send)
        if accepted_event:
            await outbox.add_event(conn, await _accepted(conn, send))
    return Outcome(send, created=True)


async def _accepted(conn: asyncpg.Connection, send: api_repo.ApiSend) -> SendAccepted:
    campaign = await campaign_repo.CampaignRepository(conn).get(send.campaign_id)
    sender = await campaign_repo.SenderAddressRepository(conn).get(campaign.sender_address_id)
    return SendAccepted(
        system=send.system,
        idempotency_key=send.idempotency_key,
        send_id=send.send_id,
        campaign_id=send.campaign_id,
        sender=sender.email,
        scheduled_at=send.scheduled_at,
    )


async def start(conn: asyncpg.Connection, send: api_repo.ApiSend) -> None:
    """Queue the send's campaign, like an operator's start (in the caller's transaction)."""
    campaigns = campaign_repo.CampaignRepository(conn)
    new_status = lifecycle.after("start", await campaigns.lock_status(send.campaign_id))
    campaign = await campaigns.get(send.campaign_id)
    sender = await campaign_repo.SenderAddressRepository(conn).get(campaign.sender_address_id)
    await campaigns.set_status(send.campaign_id, new_status)
    await outbox.add_event(
        conn,
        CampaignStarted(
            campaign_id=send.campaign_id,
            account_id=sender.account_id,
            sender=SenderIdentity(name=sender.name, email=sender.email, reply_to=sender.reply_to),
            subject=campaign.subject,
            html=campaign.html,
            text=campaign.text_body,
            group_ids=campaign.group_ids,
            priority=campaign.priority,
            tracking=campaign.tracking,
            recipients=[Recipient.model_validate(r) for r in send.recipients or []],
        ),
    )


async def start_due(runtime: Runtime) -> int:
    """Start the scheduled sends whose time has come; how many were started."""
    async with runtime.transaction() as conn:
        due = await api_repo.ApiSendRepository(conn).due(_DUE_BATCH)
        for send in due:
            await start(conn, send)
    return len(due)


async def run_scheduler(runtime: Runtime, interval: float = SCHEDULER_INTERVAL_SECONDS) -> None:
    """Start scheduled sends when their time comes, for the life of the service."""
    while True:
        try:
            while await start_due(runtime) == _DUE_BATCH:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("scheduled API sends not started; trying again", exc_info=True)
        await asyncio.sleep(interval)


def shown_status(status: str, scheduled_at: datetime | None) -> str:
    """A send's status as the API shows it: a draft with a time to come is "scheduled"."""
    return "scheduled" if status == "draft" and scheduled_at is not None else status
