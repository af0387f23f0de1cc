"""Campaign's HTTP API: sending accounts, sender addresses, groups (through audience), campaigns
and their results. Every body is validated (422 names the fields at fault), unknown ids are
404 and illegal status changes 409."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse, StreamingResponse

from services.campaign import export, operations
from services.campaign import repository as campaign_repo
from services.campaign.audience_client import AudienceClient, AudienceUnavailable
from services.campaign.console.audit import audit
from services.campaign.console.identity import ApiAdminDep, CallerDep, api_caller
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
    SesConnection,
    SmtpConnection,
    Warmup,
)
from shared.crypto import SecretBox
from shared.errors import Conflict, NotFound
from shared.service import Runtime, RuntimeDep

# Console sessions (same role rules) or the internal service token; see console.identity.
router = APIRouter(prefix="/api/v1", dependencies=[Depends(api_caller)])


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
async def create_account(body: AccountIn, runtime: RuntimeDep, caller: ApiAdminDep) -> AccountOut:
    """Create a sending account; its password or secret key is stored encrypted and never shown."""
    values = _account_values(body, SecretBox(runtime.settings.SECRET_KEYS), None)
    values |= {"name": body.name, "transport": body.transport}
    async with runtime.transaction() as conn:
        accounts = campaign_repo.AccountRepository(conn)
        if await accounts.name_taken(body.name):
            raise Conflict(f"an account named {body.name!r} already exists")
        account = await accounts.create(values)
        await outbox.add_event(conn, _account_event(account))
        await audit(conn, caller, "account.created", f"account:{account.account_id}", name=body.name)
    return AccountOut.of(account)


@router.patch("/accounts/{account_id}", response_model=AccountOut)
async def edit_account(
    account_id: int, body: AccountChange, runtime: RuntimeDep, caller: ApiAdminDep
) -> AccountOut:
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
        await audit(
            conn, caller, "account.edited", f"account:{account_id}", fields=sorted(body.model_fields_set)
        )
    return AccountOut.of(account)


@router.get("/accounts", response_model=list[AccountOut])
async def list_accounts(runtime: RuntimeDep, _: ApiAdminDep) -> list[AccountOut]:
    """Every sending account."""
    async with runtime.pool.acquire() as conn:
        return [AccountOut.of(a) for a in await campaign_repo.AccountRepository(conn).list()]


@router.get("/accounts/{account_id}", response_model=AccountOut)
async def get_account(account_id: int, runtime: RuntimeDep, _: ApiAdminDep) -> AccountOut:
    """One sending account."""
    async with runtime.pool.acquire() as conn:
        return AccountOut.of(await campaign_repo.AccountRepository(conn).get(account_id))


async def _announce(
    runtime: Runtime, account_id: int, event: AccountPaused | AccountResumed, caller: CallerDep
) -> None:
    async with runtime.transaction() as conn:
        await campaign_repo.AccountRepository(conn).get(account_id)
        await outbox.add_event(conn, event)
        action = "account.paused" if isinstance(event, AccountPaused) else "account.resumed"
        await audit(conn, caller, action, f"account:{account_id}", reason=event.reason)


@router.post("/accounts/{account_id}/pause", status_code=status.HTTP_202_ACCEPTED)
async def pause_account(
    account_id: int, runtime: RuntimeDep, caller: ApiAdminDep, body: AccountPauseIn | None = None
) -> dict[str, str]:
    """Stop every sender of the account before its next message, until resumed."""
    reason = (body or AccountPauseIn()).reason
    await _announce(
        runtime, account_id, AccountPaused(account_id=account_id, reason=reason, source="operator"), caller
    )
    return {"status": "pausing"}


@router.post("/accounts/{account_id}/resume", status_code=status.HTTP_202_ACCEPTED)
async def resume_account(
    account_id: int, runtime: RuntimeDep, caller: ApiAdminDep, body: AccountPauseIn | None = None
) -> dict[str, str]:
    """Let the account send again, highest priority first."""
    reason = (body or AccountPauseIn()).reason
    await _announce(
        runtime, account_id, AccountResumed(account_id=account_id, reason=reason, source="operator"), caller
    )
    return {"status": "resuming"}


@router.post("/sender-addresses", status_code=status.HTTP_201_CREATED, response_model=SenderAddress)
async def create_sender_address(
    body: SenderAddressIn, runtime: RuntimeDep, caller: ApiAdminDep
) -> SenderAddress:
    """Add a From identity to a sending account."""
    async with runtime.transaction() as conn:
        try:
            await campaign_repo.AccountRepository(conn).get(body.account_id)
        except NotFound as exc:
            raise _invalid("account_id", f"account {body.account_id} does not exist") from exc
        senders = campaign_repo.SenderAddressRepository(conn)
        if await senders.email_taken(str(body.email)):
            raise Conflict(f"the sender address {body.email} already exists")
        sender = await senders.create(
            body.account_id, body.name, str(body.email), str(body.reply_to) if body.reply_to else None
        )
        await audit(
            conn,
            caller,
            "sender_address.created",
            f"sender_address:{sender.sender_address_id}",
            email=sender.email,
        )
        return sender


@router.get("/sender-addresses", response_model=list[SenderAddress])
async def list_sender_addresses(runtime: RuntimeDep, caller: CallerDep) -> list[SenderAddress]:
    """Every sender address the caller may use (all of them for administrators and services)."""
    async with runtime.pool.acquire() as conn:
        senders = await campaign_repo.SenderAddressRepository(conn).list()
    return [s for s in senders if caller.may_use_sender(s.sender_address_id)]


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


def _invalid_field(exc: operations.InvalidField) -> HTTPException:
    return _invalid(exc.field, exc.message)


@router.post("/campaigns", status_code=status.HTTP_201_CREATED, response_model=CampaignOut)
async def create_campaign(body: CampaignIn, runtime: RuntimeDep, caller: CallerDep) -> CampaignOut:
    """Create a draft campaign; templates, sender address and groups are checked now."""
    try:
        campaign = await operations.create(runtime, body, caller.may_use_sender)
    except operations.InvalidField as exc:
        raise _invalid_field(exc) from exc
    except AudienceUnavailable as exc:
        raise _unavailable(exc) from exc
    return CampaignOut.of(campaign)


@router.patch("/campaigns/{campaign_id}", response_model=CampaignOut)
async def edit_campaign(
    campaign_id: int, body: CampaignChange, runtime: RuntimeDep, caller: CallerDep
) -> CampaignOut:
    """Change a draft campaign (content, priority, tracking); 409 once it has started."""
    try:
        return CampaignOut.of(await operations.edit_draft(runtime, campaign_id, body, caller.may_use_sender))
    except operations.InvalidField as exc:
        raise _invalid_field(exc) from exc


@router.get("/campaigns", response_model=list[CampaignOut])
async def list_campaigns(
    runtime: RuntimeDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[CampaignOut]:
    """Campaigns the caller may see, newest first."""
    async with runtime.pool.acquire() as conn:
        campaigns = campaign_repo.CampaignRepository(conn)
        senders = caller.sender_address_ids
        found = await (
            campaigns.list(limit, offset) if senders is None else campaigns.list_of(senders, limit, offset)
        )
        return [CampaignOut.of(c) for c in found]


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
async def get_campaign(campaign_id: int, runtime: RuntimeDep, caller: CallerDep) -> CampaignOut:
    """One campaign with its totals."""
    async with runtime.pool.acquire() as conn:
        return CampaignOut.of(await operations.get(conn, campaign_id, caller.may_use_sender))


@router.post(
    "/campaigns/{campaign_id}/start", status_code=status.HTTP_202_ACCEPTED, response_model=CampaignOut
)
async def start_campaign(campaign_id: int, runtime: RuntimeDep, caller: CallerDep) -> CampaignOut:
    """Queue a draft campaign for sending (409 if it is not a draft)."""
    return CampaignOut.of(await operations.start(runtime, campaign_id, caller))


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
async def cancel_campaign(campaign_id: int, runtime: RuntimeDep, caller: CallerDep) -> CampaignOut:
    """Cancel an unfinished campaign: what is not sent yet is skipped (409 if finished)."""
    return CampaignOut.of(await operations.cancel(runtime, campaign_id, caller))


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut)
async def pause_campaign(campaign_id: int, runtime: RuntimeDep, caller: CallerDep) -> CampaignOut:
    """Stop sending a queued or sending campaign before its next message (409 otherwise)."""
    return CampaignOut.of(await operations.pause(runtime, campaign_id, caller))


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut)
async def resume_campaign(campaign_id: int, runtime: RuntimeDep, caller: CallerDep) -> CampaignOut:
    """Go on sending a paused campaign where it stopped (409 if it is not paused)."""
    return CampaignOut.of(await operations.resume(runtime, campaign_id, caller))


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
    caller: CallerDep,
    query: ResultQueryDep,
    after: Annotated[int, Query(ge=0, description="last recipient_id of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ResultsPage:
    """The campaign's totals and its per-recipient results, filtered, in recipient order, by
    keyset pages."""
    async with runtime.pool.acquire() as conn:
        campaign = await operations.get(conn, campaign_id, caller.may_use_sender)
        items = await campaign_repo.ResultRepository(conn).page(campaign_id, after, limit, query.filter)
    return ResultsPage(
        totals=Totals.of(campaign),
        items=items,
        next_after=items[-1].recipient_id if len(items) == limit else None,
    )


@router.get("/campaigns/{campaign_id}/results/links", response_model=list[LinkClicks])
async def campaign_links(
    campaign_id: int,
    runtime: RuntimeDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[LinkClicks]:
    """Clicks per tracked link, most clicked first: human clicks, distinct human clickers, and
    machine clicks (scanners, bots) apart."""
    async with runtime.pool.acquire() as conn:
        await operations.get(conn, campaign_id, caller.may_use_sender)
        return await campaign_repo.ResultRepository(conn).links(campaign_id, limit)


# Rows read per query of the export: big enough to be quick, small enough to bound memory.
EXPORT_CHUNK = 2000


@router.get("/campaigns/{campaign_id}/results.csv")
async def export_results(
    campaign_id: int,
    runtime: RuntimeDep,
    caller: CallerDep,
    query: ResultQueryDep,
    delimiter: export.Delimiter = "semicolon",
) -> StreamingResponse:
    """The results as CSV (UTF-8 with BOM, `;` unless `delimiter=comma`), with the page's filters,
    streamed in keyset chunks so a million rows never sit in memory."""
    async with runtime.pool.acquire() as conn:
        await operations.get(conn, campaign_id, caller.may_use_sender)

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
