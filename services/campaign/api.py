"""Campaign's HTTP API: sending accounts, sender addresses, groups (through audience), campaigns
and their results. Every body is validated (422 names the fields at fault), unknown ids are
404 and illegal status changes 409."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse, StreamingResponse

from services.campaign import export, lifecycle
from services.campaign import repository as campaign_repo
from services.campaign.audience_client import AudienceClient, AudienceUnavailable
from services.campaign.models import (
    Account,
    AccountChange,
    AccountIn,
    AccountOut,
    AccountPauseIn,
    CampaignChange,
    CampaignIn,
    CampaignOut,
    LinkClicks,
    ResultsPage,
    ResultStatus,
    SenderAddress,
    SenderAddressIn,
    Totals,
)
from shared import outbox
from shared.contracts import (
    AccountConfigured,
    AccountPaused,
    AccountResumed,
    CampaignCancelled,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    SenderIdentity,
    SesConnection,
    SmtpConnection,
    Warmup,
)
from shared.crypto import SecretBox
from shared.errors import Conflict, NotFound
from shared.personalisation import TemplateProblem, compile_html, compile_plain
from shared.service import Runtime, RuntimeDep

router = APIRouter(prefix="/api/v1")


def _invalid(field: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the field at fault."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def _audience(runtime: Runtime) -> AudienceClient:
    client: AudienceClient = runtime.state["audience"]
    return client


def _unavailable(exc: AudienceUnavailable) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"audience service unavailable: {exc}")


def _account_event(account: Account) -> AccountConfigured:
    smtp = ses = None
    if account.transport == "smtp":
        smtp = SmtpConnection(
            host=account.smtp_host or "",
            port=account.smtp_port or 587,
            security=account.smtp_security or "starttls",
            username=account.smtp_username,
            password_encrypted=account.smtp_password_encrypted,
        )
    else:
        ses = SesConnection(
            region=account.ses_region or "",
            access_key_id=account.ses_access_key_id or "",
            secret_access_key_encrypted=account.ses_secret_access_key_encrypted or "",
            endpoint_url=account.ses_endpoint_url,
        )
    return AccountConfigured(
        account_id=account.account_id,
        name=account.name,
        transport=account.transport,
        smtp=smtp,
        ses=ses,
        rate_per_second=account.rate_per_second,
        active=account.active,
        daily_quota=account.daily_quota,
        warmup=None
        if account.warmup_start_per_day is None or account.warmup_started_on is None
        else Warmup(
            started_on=account.warmup_started_on,
            start_per_day=account.warmup_start_per_day,
            growth_per_day=account.warmup_growth_per_day or 1.5,
        ),
        use_provider_limits=account.use_provider_limits,
        max_connections=account.max_connections,
        bounce_control=account.bounce_control,
        bounce_threshold=account.bounce_threshold,
        complaint_threshold=account.complaint_threshold,
        pause_hours=account.pause_hours,
    )


def _account_values(
    body: AccountIn | AccountChange, box: SecretBox, current: Account | None
) -> dict[str, Any]:
    """The stored columns of an account created from `body`, or of `current` edited by it."""
    values: dict[str, Any] = current.model_dump() if current is not None else {}
    for column in (
        "rate_per_second",
        "active",
        "use_provider_limits",
        "max_connections",
        "daily_quota",
        "bounce_control",
        "bounce_threshold",
        "complaint_threshold",
        "pause_hours",
    ):
        given = getattr(body, column)
        if given is not None or isinstance(body, AccountIn):
            values[column] = given
    if body.warmup is not None:
        values |= {
            "warmup_started_on": body.warmup.started_on,
            "warmup_start_per_day": body.warmup.start_per_day,
            "warmup_growth_per_day": body.warmup.growth_per_day,
        }
    transport = current.transport if current is not None else body.transport  # type: ignore[union-attr]
    if body.smtp is not None and transport == "smtp":
        password = body.smtp.password
        kept = current.smtp_password_encrypted if current is not None else None
        values |= {
            "smtp_host": body.smtp.host,
            "smtp_port": body.smtp.port,
            "smtp_security": body.smtp.security,
            "smtp_username": body.smtp.username,
            # Write-only: an edit that does not repeat the password keeps the stored one.
            "smtp_password_encrypted": box.encrypt(password) if password else kept,
        }
    if body.ses is not None and transport == "ses":
        values |= {
            "ses_region": body.ses.region,
            "ses_access_key_id": body.ses.access_key_id,
            "ses_secret_access_key_encrypted": box.encrypt(body.ses.secret_access_key),
            "ses_endpoint_url": body.ses.endpoint_url,
        }
    return values


@router.post("/accounts", status_code=status.HTTP_201_CREATED, response_model=AccountOut)
async def create_account(body: AccountIn, runtime: RuntimeDep) -> AccountOut:
    """Create a sending account; its password or secret key is stored encrypted and never shown."""
    values = _account_values(body, SecretBox(runtime.settings.SECRET_KEYS), None)
    values |= {"name": body.name, "transport": body.transport}
    async with runtime.transaction() as conn:
        accounts = campaign_repo.AccountRepository(conn)
        if await accounts.name_taken(body.name):
            raise Conflict(f"an account named {body.name!r} already exists")
        account = await accounts.create(values)
        await outbox.add_event(conn, _account_event(account))
    return AccountOut.of(account)


@router.patch("/accounts/{account_id}", response_model=AccountOut)
async def edit_account(account_id: int, body: AccountChange, runtime: RuntimeDep) -> AccountOut:
    """Change a sending account; senders apply the new settings before their next message."""
    if body.smtp is not None and body.ses is not None:
        raise _invalid("smtp", "give the settings of the account's own transport only")
    box = SecretBox(runtime.settings.SECRET_KEYS)
    async with runtime.transaction() as conn:
        accounts = campaign_repo.AccountRepository(conn)
        current = await accounts.get(account_id)
        if (body.smtp is not None and current.transport != "smtp") or (
            body.ses is not None and current.transport != "ses"
        ):
            raise _invalid("smtp" if body.smtp else "ses", f"this account sends through {current.transport}")
        account = await accounts.update(account_id, _account_values(body, box, current))
        await outbox.add_event(conn, _account_event(account))
    return AccountOut.of(account)


@router.get("/accounts", response_model=list[AccountOut])
async def list_accounts(runtime: RuntimeDep) -> list[AccountOut]:
    """Every sending account."""
    async with runtime.pool.acquire() as conn:
        return [AccountOut.of(a) for a in await campaign_repo.AccountRepository(conn).list()]


@router.get("/accounts/{account_id}", response_model=AccountOut)
async def get_account(account_id: int, runtime: RuntimeDep) -> AccountOut:
    """One sending account."""
    async with runtime.pool.acquire() as conn:
        return AccountOut.of(await campaign_repo.AccountRepository(conn).get(account_id))


async def _announce(runtime: Runtime, account_id: int, event: AccountPaused | AccountResumed) -> None:
    async with runtime.transaction() as conn:
        await campaign_repo.AccountRepository(conn).get(account_id)
        await outbox.add_event(conn, event)


@router.post("/accounts/{account_id}/pause", status_code=status.HTTP_202_ACCEPTED)
async def pause_account(
    account_id: int, runtime: RuntimeDep, body: AccountPauseIn | None = None
) -> dict[str, str]:
    """Stop every sender of the account before its next message, until resumed."""
    reason = (body or AccountPauseIn()).reason
    await _announce(
        runtime, account_id, AccountPaused(account_id=account_id, reason=reason, source="operator")
    )
    return {"status": "pausing"}


@router.post("/accounts/{account_id}/resume", status_code=status.HTTP_202_ACCEPTED)
async def resume_account(
    account_id: int, runtime: RuntimeDep, body: AccountPauseIn | None = None
) -> dict[str, str]:
    """Let the account send again, highest priority first."""
    reason = (body or AccountPauseIn()).reason
    await _announce(
        runtime, account_id, AccountResumed(account_id=account_id, reason=reason, source="operator")
    )
    return {"status": "resuming"}


@router.post("/sender-addresses", status_code=status.HTTP_201_CREATED, response_model=SenderAddress)
async def create_sender_address(body: SenderAddressIn, runtime: RuntimeDep) -> SenderAddress:
    """Add a From identity to a sending account."""
    async with runtime.transaction() as conn:
        try:
            await campaign_repo.AccountRepository(conn).get(body.account_id)
        except NotFound as exc:
            raise _invalid("account_id", f"account {body.account_id} does not exist") from exc
        senders = campaign_repo.SenderAddressRepository(conn)
        if await senders.email_taken(str(body.email)):
            raise Conflict(f"the sender address {body.email} already exists")
        return await senders.create(
            body.account_id, body.name, str(body.email), str(body.reply_to) if body.reply_to else None
        )


@router.get("/sender-addresses", response_model=list[SenderAddress])
async def list_sender_addresses(runtime: RuntimeDep) -> list[SenderAddress]:
    """Every sender address."""
    async with runtime.pool.acquire() as conn:
        return await campaign_repo.SenderAddressRepository(conn).list()


@router.post("/groups", status_code=status.HTTP_201_CREATED)
async def create_group(body: Annotated[Any, Body()], runtime: RuntimeDep) -> JSONResponse:
    """Create a group in audience (which validates it): `{"name": ..., "members": [{"email", "name"}]}`."""
    try:
        code, answer = await _audience(runtime).create_group(body)
    except AudienceUnavailable as exc:
        raise _unavailable(exc) from exc
    return JSONResponse(answer, status_code=code)


@router.get("/groups/{group_id}")
async def get_group(group_id: int, runtime: RuntimeDep) -> JSONResponse:
    """A group with its member count, from audience."""
    try:
        code, answer = await _audience(runtime).get_group(group_id)
    except AudienceUnavailable as exc:
        raise _unavailable(exc) from exc
    return JSONResponse(answer, status_code=code)


def _check_templates(body: CampaignIn | CampaignChange) -> None:
    checks: list[tuple[str, Callable[[], object]]] = []
    if body.subject is not None:
        subject = body.subject
        checks.append(("subject", lambda: compile_plain(subject, "subject")))
    if body.html is not None:
        html = body.html
        checks.append(("html", lambda: compile_html(html)))
    if body.text is not None:
        text = body.text
        checks.append(("text", lambda: compile_plain(text, "text")))
    for field, check in checks:
        try:
            check()
        except TemplateProblem as exc:
            raise _invalid(field, str(exc)) from exc


@router.post("/campaigns", status_code=status.HTTP_201_CREATED, response_model=CampaignOut)
async def create_campaign(body: CampaignIn, runtime: RuntimeDep) -> CampaignOut:
    """Create a draft campaign; templates, sender address and groups are checked now."""
    _check_templates(body)
    try:
        missing = await _audience(runtime).missing_groups(body.group_ids)
    except AudienceUnavailable as exc:
        raise _unavailable(exc) from exc
    if missing:
        raise _invalid("group_ids", f"unknown group(s): {', '.join(map(str, missing))}")
    async with runtime.transaction() as conn:
        try:
            await campaign_repo.SenderAddressRepository(conn).get(body.sender_address_id)
        except NotFound as exc:
            raise _invalid(
                "sender_address_id", f"sender address {body.sender_address_id} does not exist"
            ) from exc
        campaign = await campaign_repo.CampaignRepository(conn).create(
            name=body.name,
            sender_address_id=body.sender_address_id,
            group_ids=body.group_ids,
            subject=body.subject,
            html=body.html,
            text=body.text,
            priority=body.priority,
            tracking=body.tracking,
        )
    return CampaignOut.of(campaign)


@router.patch("/campaigns/{campaign_id}", response_model=CampaignOut)
async def edit_campaign(campaign_id: int, body: CampaignChange, runtime: RuntimeDep) -> CampaignOut:
    """Change a draft campaign (content, priority, tracking); 409 once it has started."""
    _check_templates(body)
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        if await campaigns.lock_status(campaign_id) != lifecycle.Status.DRAFT:
            raise Conflict("only a draft campaign can be edited")
        await campaigns.update_draft(campaign_id, body.model_dump(exclude_unset=True))
        return CampaignOut.of(await campaigns.get(campaign_id))


@router.get("/campaigns", response_model=list[CampaignOut])
async def list_campaigns(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[CampaignOut]:
    """Campaigns, newest first."""
    async with runtime.pool.acquire() as conn:
        return [CampaignOut.of(c) for c in await campaign_repo.CampaignRepository(conn).list(limit, offset)]


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
async def get_campaign(campaign_id: int, runtime: RuntimeDep) -> CampaignOut:
    """One campaign with its totals."""
    async with runtime.pool.acquire() as conn:
        return CampaignOut.of(await campaign_repo.CampaignRepository(conn).get(campaign_id))


@router.post(
    "/campaigns/{campaign_id}/start", status_code=status.HTTP_202_ACCEPTED, response_model=CampaignOut
)
async def start_campaign(campaign_id: int, runtime: RuntimeDep) -> CampaignOut:
    """Queue a draft campaign for sending (409 if it is not a draft)."""
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        new_status = lifecycle.after("start", await campaigns.lock_status(campaign_id))
        campaign = await campaigns.get(campaign_id)
        sender = await campaign_repo.SenderAddressRepository(conn).get(campaign.sender_address_id)
        account = await campaign_repo.AccountRepository(conn).get(sender.account_id)
        if not account.active:
            raise Conflict(f"the sending account {account.name!r} is inactive")
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
            ),
        )
        return CampaignOut.of(await campaigns.get(campaign_id))


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
async def cancel_campaign(campaign_id: int, runtime: RuntimeDep) -> CampaignOut:
    """Cancel an unfinished campaign: what is not sent yet is skipped (409 if finished)."""
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        new_status = lifecycle.after("cancel", await campaigns.lock_status(campaign_id))
        await campaigns.set_status(campaign_id, new_status)
        await outbox.add_event(conn, CampaignCancelled(campaign_id=campaign_id))
        return CampaignOut.of(await campaigns.get(campaign_id))


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut)
async def pause_campaign(campaign_id: int, runtime: RuntimeDep) -> CampaignOut:
    """Stop sending a queued or sending campaign before its next message (409 otherwise)."""
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        await campaigns.set_status(
            campaign_id, lifecycle.after("pause", await campaigns.lock_status(campaign_id))
        )
        await outbox.add_event(conn, CampaignPaused(campaign_id=campaign_id))
        return CampaignOut.of(await campaigns.get(campaign_id))


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut)
async def resume_campaign(campaign_id: int, runtime: RuntimeDep) -> CampaignOut:
    """Go on sending a paused campaign where it stopped (409 if it is not paused)."""
    async with runtime.transaction() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        lifecycle.after("resume", await campaigns.lock_status(campaign_id))
        await campaigns.resume(campaign_id)
        await outbox.add_event(conn, CampaignResumed(campaign_id=campaign_id))
        return CampaignOut.of(await campaigns.get(campaign_id))


class ResultQuery:
    """The filters of the results page and its export (query parameters)."""

    def __init__(
        self,
        name: Annotated[str | None, Query(max_length=200, description="part of the name")] = None,
        email: Annotated[str | None, Query(max_length=320, description="part of the e-mail")] = None,
        q: Annotated[str | None, Query(max_length=320, description="part of the name or e-mail")] = None,
        status: Annotated[
            ResultStatus | None,
            Query(
                description="an outcome (sent, failed, skipped, indeterminate) or what the recipient"
                " did: read (has a read date), unread (sent, no read date), clicked (a person"
                " followed a link), unsubscribed (either scope), unsubscribed_campaign,"
                " unsubscribed_all, bounced, complained"
            ),
        ] = None,
    ) -> None:
        self.filter = campaign_repo.ResultFilter(name=name, email=email, q=q, status=status)


ResultQueryDep = Annotated[ResultQuery, Depends()]


@router.get("/campaigns/{campaign_id}/results", response_model=ResultsPage)
async def campaign_results(
    campaign_id: int,
    runtime: RuntimeDep,
    query: ResultQueryDep,
    after: Annotated[int, Query(ge=0, description="last recipient_id of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ResultsPage:
    """The campaign's totals and its per-recipient results, filtered, in recipient order, by
    keyset pages."""
    async with runtime.pool.acquire() as conn:
        campaign = await campaign_repo.CampaignRepository(conn).get(campaign_id)
        items = await campaign_repo.ResultRepository(conn).page(campaign_id, after, limit, query.filter)
    return ResultsPage(
        totals=Totals.of(campaign),
        items=items,
        next_after=items[-1].recipient_id if len(items) == limit else None,
    )


@router.get("/campaigns/{campaign_id}/results/links", response_model=list[LinkClicks])
async def campaign_links(
    campaign_id: int, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[LinkClicks]:
    """Clicks per tracked link, most clicked first: human clicks, distinct human clickers, and
    machine clicks (scanners, bots) apart."""
    async with runtime.pool.acquire() as conn:
        await campaign_repo.CampaignRepository(conn).get(campaign_id)
        return await campaign_repo.ResultRepository(conn).links(campaign_id, limit)


# Rows read per query of the export: big enough to be quick, small enough to bound memory.
EXPORT_CHUNK = 2000


@router.get("/campaigns/{campaign_id}/results.csv")
async def export_results(
    campaign_id: int,
    runtime: RuntimeDep,
    query: ResultQueryDep,
    delimiter: export.Delimiter = "semicolon",
) -> StreamingResponse:
    """The results as CSV (UTF-8 with BOM, `;` unless `delimiter=comma`), with the page's filters,
    streamed in keyset chunks so a million rows never sit in memory."""
    async with runtime.pool.acquire() as conn:
        await campaign_repo.CampaignRepository(conn).get(campaign_id)

    async def chunks() -> AsyncIterator[bytes]:
        yield export.header(delimiter).encode()
        after = 0
        while True:
            async with runtime.pool.acquire() as conn:
                page = await campaign_repo.ResultRepository(conn).page(
                    campaign_id, after, EXPORT_CHUNK, query.filter
                )
            if not page:
                return
            yield export.lines(map(export.row, page), delimiter).encode()
            if len(page) < EXPORT_CHUNK:
                return
            after = page[-1].recipient_id

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="campanha-{campaign_id}-resultado.csv"'},
    )
