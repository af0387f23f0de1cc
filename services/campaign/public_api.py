"""The public API for other systems (`/public/v1`, API keys only) and its admin endpoints
(`/api/v1/api-keys`, `/routing-rules`, `/templates`, `/api-sends`, identity status and test sends).

The public router is versioned apart from the internal `/api/v1`: it is a contract with systems
we do not deploy, so it changes only by adding; a breaking change is a `/public/v2`.
Authentication: `Authorization: Bearer <token>` or `X-API-Key: <token>`; each key is rate
limited (429 with Retry-After). A send is created with an `Idempotency-Key` header.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    Security,
    status,
)
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from services.campaign import api_keys, sends, ses_identity, test_send
from services.campaign import api_repository as api_repo
from services.campaign import repository as campaign_repo
from services.campaign.console.identity import api_admin
from services.campaign.models import ResultsPage, Totals
from shared.contracts import SendSpec
from shared.crypto import SecretBox
from shared.errors import Conflict, NotFound
from shared.personalisation import TemplateProblem, compile_html, compile_plain
from shared.service import Runtime, RuntimeDep


@contextlib.asynccontextmanager
async def _scheduler(app: FastAPI) -> AsyncIterator[None]:
    """Runs the scheduler of scheduled sends while the service runs (the service's own lifespan,
    which opens the pool, has started before this one)."""
    runtime: Runtime = app.state.runtime
    task = asyncio.create_task(sends.run_scheduler(runtime), name="campaign-api-send-scheduler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(prefix="/public/v1", tags=["public"], lifespan=_scheduler)
# Administrators only: a console session of an admin or the internal service token.
admin_router = APIRouter(prefix="/api/v1", tags=["api sends (admin)"], dependencies=[Depends(api_admin)])

_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="A key of the caller's choosing (e.g. a UUID): a repeat of the same request"
        " with it returns the same send; another request with it is a 409.",
    ),
]


def _refs(node: Any) -> set[str]:
    """The component schema names a piece of an OpenAPI document refers to."""
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node))
    return set()


def public_document(full: dict[str, Any]) -> dict[str, Any]:
    """The public part of the service's OpenAPI document: its paths and the schemas they use."""
    paths = {path: item for path, item in full["paths"].items() if path.startswith(f"{router.prefix}/")}
    schemas = full.get("components", {}).get("schemas", {})
    wanted, pending = set(), _refs(paths)
    while pending:
        name = pending.pop()
        if name not in wanted and name in schemas:
            wanted.add(name)
            pending |= _refs(schemas[name])
    components = dict(full.get("components", {}))
    components["schemas"] = {name: schemas[name] for name in sorted(wanted)}
    info = {"title": "Mailer public API", "version": "1", "description": __doc__ or ""}
    return {**full, "info": info, "paths": paths, "components": components}


@router.get("/openapi.json", include_in_schema=False)
async def public_openapi(request: Request) -> JSONResponse:
    """The public API's own OpenAPI document: only /public/v1, for the systems that call it."""
    document = getattr(request.app.state, "public_openapi", None)
    if document is None:
        document = request.app.state.public_openapi = public_document(request.app.openapi())
    return JSONResponse(document)


@router.get("/docs", include_in_schema=False)
async def public_docs() -> HTMLResponse:
    """The public API's reference, browsable."""
    return get_swagger_ui_html(openapi_url=f"{router.prefix}/openapi.json", title="Mailer public API")


class Problem(BaseModel):
    """An error: `detail` says why, `code` is stable for programs."""

    detail: str
    code: str | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no valid API key"},
    429: {"model": Problem, "description": "rate limit of the key reached; see Retry-After"},
}


def _problem(exc: sends.SendProblem) -> JSONResponse:
    return JSONResponse({"detail": exc.reason, "code": exc.code}, status_code=exc.status)


async def caller_key(
    runtime: RuntimeDep,
    response: Response,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> api_repo.ApiKey:
    """The API key of the request (401 without a valid one), charged one request (429 over its rate)."""
    token = header or (bearer.credentials if bearer is not None else None)
    key = None
    if token and token.isascii() and len(token) <= 200:
        async with runtime.pool.acquire() as conn:
            key = await api_repo.ApiKeyRepository(conn).active_by_hash(api_keys.digest(token))
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required (Authorization: Bearer or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    limiter: api_keys.RateLimiter = runtime.state.setdefault("api_rate_limiter", api_keys.RateLimiter())
    wait = limiter.acquire(key.api_key_id, key.rate_per_minute)
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit of {key.rate_per_minute} requests per minute reached",
            headers={"Retry-After": api_keys.retry_after(wait)},
        )
    return key


KeyDep = Annotated[api_repo.ApiKey, Depends(caller_key)]


class SendIn(SendSpec):
    """A send request (the same fields as the `send.requested` event of RabbitMQ)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SendOut(BaseModel):
    """A send: its status (scheduled, queued, sending, paused, completed, cancelled, failed),
    sender, and totals so far."""

    send_id: UUID
    campaign_id: int
    system: str
    idempotency_key: str
    channel: str
    status: str
    failure_reason: str | None
    sender: str
    message_type: str | None
    tenant: str | None
    template: str | None
    scheduled_at: datetime | None
    created_at: datetime
    totals: Totals


async def _send_out(runtime: Runtime, send: api_repo.ApiSend) -> SendOut:
    async with runtime.pool.acquire() as conn:
        campaign = await campaign_repo.CampaignRepository(conn).get(send.campaign_id)
        sender = await campaign_repo.SenderAddressRepository(conn).get(campaign.sender_address_id)
    return SendOut(
        send_id=send.send_id,
        campaign_id=send.campaign_id,
        system=send.system,
        idempotency_key=send.idempotency_key,
        channel=send.channel,
        status=sends.shown_status(campaign.status.value, send.scheduled_at),
        failure_reason=campaign.failure_reason,
        sender=sender.email,
        message_type=send.message_type,
        tenant=send.tenant,
        template=send.template_key,
        scheduled_at=send.scheduled_at,
        created_at=send.created_at,
        totals=Totals.of(campaign),
    )


@router.post(
    "/sends",
    status_code=status.HTTP_201_CREATED,
    response_model=SendOut,
    responses={
        200: {"model": SendOut, "description": "a repeat of an earlier request: the same send"},
        403: {"model": Problem, "description": "the sender is not in the key's scope"},
        409: {"model": Problem, "description": "Idempotency-Key reused for another request"},
        422: {"description": "invalid request: unknown sender, route, group or template, bad template..."},
        503: {"model": Problem, "description": "a dependency (audience, SES) is away; retry"},
        **_ERRORS,
    },
)
async def create_send(
    body: SendIn, idempotency_key: IdempotencyKey, key: KeyDep, runtime: RuntimeDep, response: Response
) -> SendOut | JSONResponse:
    """Send a message to inline recipients (at most 1000) or a group, now or at `scheduled_at`.
    It becomes a campaign of origin "api"; 201 when created, 200 for a repeat."""
    caller = sends.Caller(
        system=key.system,
        allowed_senders=frozenset(key.sender_address_ids),
        channel="http",
        api_key_id=key.api_key_id,
    )
    try:
        outcome = await sends.create(runtime, body, idempotency_key, caller)
    except sends.SendProblem as exc:
        return _problem(exc)
    if not outcome.created:
        response.status_code = status.HTTP_200_OK
    return await _send_out(runtime, outcome.send)


async def _own_send(runtime: Runtime, send_id: UUID, key: api_repo.ApiKey) -> api_repo.ApiSend:
    async with runtime.pool.acquire() as conn:
        send = await api_repo.ApiSendRepository(conn).get(send_id)
    if send.system != key.system:
        raise NotFound(f"send {send_id} not found")
    return send


@router.get("/sends/{send_id}", response_model=SendOut, responses={404: {"model": Problem}, **_ERRORS})
async def get_send(send_id: UUID, key: KeyDep, runtime: RuntimeDep) -> SendOut:
    """A send of the caller's system with its status and totals (opens, clicks, bounces...)."""
    return await _send_out(runtime, await _own_send(runtime, send_id, key))


@router.get("/sends", response_model=list[api_repo.SendListing], responses=_ERRORS)
async def list_sends(
    key: KeyDep,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[api_repo.SendListing]:
    """The caller's system's sends, newest first."""
    async with runtime.pool.acquire() as conn:
        return await api_repo.ApiSendRepository(conn).listing(key.system, limit, offset)


@router.get(
    "/sends/{send_id}/results", response_model=ResultsPage, responses={404: {"model": Problem}, **_ERRORS}
)
async def send_results(
    send_id: UUID,
    key: KeyDep,
    runtime: RuntimeDep,
    after: Annotated[
        int, Query(ge=0, le=2**31 - 1, description="last recipient_id of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ResultsPage:
    """Per-recipient results of a send (outcome, read date, clicks, bounces), by keyset pages."""
    send = await _own_send(runtime, send_id, key)
    async with runtime.pool.acquire() as conn:
        campaign = await campaign_repo.CampaignRepository(conn).get(send.campaign_id)
        items = await campaign_repo.ResultRepository(conn).page(
            send.campaign_id, after, limit, campaign_repo.ResultFilter()
        )
    return ResultsPage(
        totals=Totals.of(campaign),
        items=items,
        next_after=items[-1].recipient_id if len(items) == limit else None,
    )


class SenderOut(BaseModel):
    """A sender address a key may use, with its SES identity status."""

    sender_address_id: int
    name: str
    email: str
    identity: ses_identity.IdentityCheck | None
    identity_error: str | None = None


async def _identity(
    runtime: Runtime, sender_address_id: int
) -> tuple[ses_identity.IdentityCheck | None, str | None]:
    async with runtime.pool.acquire() as conn:
        sender = await campaign_repo.SenderAddressRepository(conn).get(sender_address_id)
        account = await campaign_repo.AccountRepository(conn).get(sender.account_id)
    try:
        return await ses_identity.check(account, sender.email, SecretBox(runtime.settings.SECRET_KEYS)), None
    except ses_identity.IdentityUnavailable as exc:
        return None, str(exc)


@router.get("/senders", response_model=list[SenderOut], responses=_ERRORS)
async def list_senders(key: KeyDep, runtime: RuntimeDep) -> list[SenderOut]:
    """The sender addresses the key may name, each with its SES verification status."""
    found = []
    async with runtime.pool.acquire() as conn:
        senders = campaign_repo.SenderAddressRepository(conn)
        addresses = [await senders.get(i) for i in key.sender_address_ids]
    for address in addresses:
        identity, error = await _identity(runtime, address.sender_address_id)
        found.append(
            SenderOut(
                sender_address_id=address.sender_address_id,
                name=address.name,
                email=address.email,
                identity=identity,
                identity_error=error,
            )
        )
    return found


class TestSendIn(BaseModel):
    """Where a test message goes."""

    __test__ = False

    model_config = ConfigDict(extra="forbid")

    to: EmailStr


@router.post(
    "/senders/{sender_address_id}/test",
    response_model=test_send.TestSendOut,
    responses={403: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}, **_ERRORS},
)
async def test_sender(
    sender_address_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: TestSendIn,
    key: KeyDep,
    runtime: RuntimeDep,
) -> test_send.TestSendOut:
    """Send one test message from a sender in the key's scope ("Testar envio") and show how the
    provider answered, step by step."""
    if sender_address_id not in key.sender_address_ids:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="this sender address is not in the key's scope",
        )
    return await test_send.from_sender(runtime, sender_address_id, str(body.to))


# --- admin -------------------------------------------------------------------------------------


class ApiKeyIn(BaseModel):
    """A new API key for a calling system (or tenant), with the senders it may name directly."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    system: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    sender_address_ids: list[int] = Field(default_factory=list, max_length=1000)
    rate_per_minute: int = Field(default=600, ge=1, le=1_000_000)


class ApiKeyOut(BaseModel):
    """An API key as listed (never its token)."""

    api_key_id: int
    system: str
    name: str
    token_prefix: str
    rate_per_minute: int
    sender_address_ids: list[int]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A new key with its token, shown this once only."""

    token: str


@admin_router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
async def create_api_key(body: ApiKeyIn, runtime: RuntimeDep) -> ApiKeyCreated:
    """Create a key; its token is in this answer only (it is stored hashed)."""
    token, prefix = api_keys.new_token()
    async with runtime.transaction() as conn:
        senders = campaign_repo.SenderAddressRepository(conn)
        for sender_id in set(body.sender_address_ids):
            try:
                await senders.get(sender_id)
            except NotFound as exc:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    detail=[{"loc": ["body", "sender_address_ids"], "msg": str(exc), "type": "value_error"}],
                ) from exc
        key = await api_repo.ApiKeyRepository(conn).create(
            body.system,
            body.name,
            prefix,
            api_keys.digest(token),
            body.rate_per_minute,
            sorted(set(body.sender_address_ids)),
        )
    return ApiKeyCreated(**key.model_dump(), token=token)


@admin_router.get("/api-keys", response_model=list[ApiKeyOut])
async def list_api_keys(runtime: RuntimeDep) -> list[ApiKeyOut]:
    """Every key, revoked ones included."""
    async with runtime.pool.acquire() as conn:
        return [ApiKeyOut(**k.model_dump()) for k in await api_repo.ApiKeyRepository(conn).list()]


@admin_router.post("/api-keys/{api_key_id}/revoke", response_model=ApiKeyOut)
async def revoke_api_key(api_key_id: int, runtime: RuntimeDep) -> ApiKeyOut:
    """Revoke a key: it authenticates nothing from now on."""
    async with runtime.transaction() as conn:
        keys = api_repo.ApiKeyRepository(conn)
        await keys.revoke(api_key_id)
        return ApiKeyOut(**(await keys.get(api_key_id)).model_dump())


class RoutingRuleIn(BaseModel):
    """(system, tenant, message type) -> sender address; an empty tenant is any tenant."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    system: str = Field(min_length=1, max_length=100)
    tenant: str = Field(default="", max_length=100)
    message_type: str = Field(min_length=1, max_length=100)
    sender_address_id: int


@admin_router.post("/routing-rules", status_code=status.HTTP_201_CREATED, response_model=api_repo.RoutingRule)
async def create_routing_rule(body: RoutingRuleIn, runtime: RuntimeDep) -> api_repo.RoutingRule:
    """Route a system's (and tenant's) message type to a sender address."""
    async with runtime.transaction() as conn:
        try:
            await campaign_repo.SenderAddressRepository(conn).get(body.sender_address_id)
        except NotFound as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[{"loc": ["body", "sender_address_id"], "msg": str(exc), "type": "value_error"}],
            ) from exc
        rules = api_repo.RoutingRuleRepository(conn)
        if await rules.taken(body.system, body.tenant, body.message_type):
            raise Conflict("a rule for this system, tenant and message type already exists")
        return await rules.create(body.system, body.tenant, body.message_type, body.sender_address_id)


@admin_router.get("/routing-rules", response_model=list[api_repo.RoutingRule])
async def list_routing_rules(runtime: RuntimeDep) -> list[api_repo.RoutingRule]:
    """Every routing rule."""
    async with runtime.pool.acquire() as conn:
        return await api_repo.RoutingRuleRepository(conn).list()


@admin_router.delete("/routing-rules/{routing_rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_routing_rule(routing_rule_id: int, runtime: RuntimeDep) -> Response:
    """Delete a routing rule."""
    async with runtime.transaction() as conn:
        await api_repo.RoutingRuleRepository(conn).delete(routing_rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class TemplateIn(BaseModel):
    """A stored template: API sends name it by `key`, with variables for what it leaves open."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    subject: str = Field(min_length=1, max_length=998)
    html: str = Field(min_length=1, max_length=2_000_000)
    text: str | None = Field(default=None, max_length=2_000_000)


@admin_router.post("/templates", status_code=status.HTTP_201_CREATED, response_model=api_repo.Template)
async def create_template(body: TemplateIn, runtime: RuntimeDep) -> api_repo.Template:
    """Store a template (checked now: a syntax error is a 422 with its line)."""
    for field, source in (("subject", body.subject), ("html", body.html), ("text", body.text or "")):
        try:
            if field == "html":
                compile_html(source)
            else:
                compile_plain(source, field)
        except TemplateProblem as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[{"loc": ["body", field], "msg": str(exc), "type": "value_error"}],
            ) from exc
    async with runtime.transaction() as conn:
        templates = api_repo.TemplateRepository(conn)
        if await templates.get(body.key) is not None:
            raise Conflict(f"a template {body.key!r} already exists")
        return await templates.create(body.key, body.subject, body.html, body.text)


@admin_router.get("/templates", response_model=list[api_repo.Template])
async def list_templates(runtime: RuntimeDep) -> list[api_repo.Template]:
    """Every stored template."""
    async with runtime.pool.acquire() as conn:
        return await api_repo.TemplateRepository(conn).list()


@admin_router.get("/api-sends", response_model=list[api_repo.SendListing])
async def list_api_sends(
    runtime: RuntimeDep,
    system: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[api_repo.SendListing]:
    """ "Envios por API": every API send with its sender, status and views (opens), newest first."""
    async with runtime.pool.acquire() as conn:
        return await api_repo.ApiSendRepository(conn).listing(system, limit, offset)


@admin_router.get("/sender-addresses/{sender_address_id}/identity", response_model=SenderOut)
async def sender_identity(sender_address_id: int, runtime: RuntimeDep) -> SenderOut:
    """The SES verification status of a sender address (the address or its domain)."""
    async with runtime.pool.acquire() as conn:
        address = await campaign_repo.SenderAddressRepository(conn).get(sender_address_id)
    identity, error = await _identity(runtime, sender_address_id)
    return SenderOut(
        sender_address_id=address.sender_address_id,
        name=address.name,
        email=address.email,
        identity=identity,
        identity_error=error,
    )


@admin_router.post("/sender-addresses/{sender_address_id}/test", response_model=test_send.TestSendOut)
async def admin_test_sender(
    sender_address_id: int, body: TestSendIn, runtime: RuntimeDep
) -> test_send.TestSendOut:
    """ "Testar envio": one test message from this sender address, with the provider's answers."""
    return await test_send.from_sender(runtime, sender_address_id, str(body.to))


class AccountTestIn(BaseModel):
    """Where a test message of an account goes, and the From it uses."""

    model_config = ConfigDict(extra="forbid")

    to: EmailStr
    from_address: EmailStr


@admin_router.post("/accounts/{account_id}/test", response_model=test_send.TestSendOut)
async def admin_test_account(
    account_id: int, body: AccountTestIn, runtime: RuntimeDep
) -> test_send.TestSendOut:
    """ "Testar envio" of a sending account, from any address, with the provider's answers."""
    return await test_send.from_account(runtime, account_id, str(body.from_address), str(body.to))
