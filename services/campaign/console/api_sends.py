"""Envios por API: the sends other systems made (campaigns of origin "api") with their sender and
views, and, for administrators, what lets those systems in: API keys (the token shown once),
routing rules, and each sender address's SES identity status with a test send ("Testar envio").

A normal user sees the sends of the sender addresses linked to them; administrators see all.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.campaign import api_keys, ses_identity, test_send
from services.campaign import api_repository as api_repo
from services.campaign import repository as campaign_repo
from services.campaign.console.audit import audit
from services.campaign.console.identity import AdminDep, UserDep
from services.campaign.console.templating import render
from shared.crypto import SecretBox
from shared.service import RuntimeDep

router = APIRouter()

PAGE_SIZE = 50
STATUS = {
    "draft": "Agendado",
    "scheduled": "Agendado",
    "queued": "Na fila",
    "sending": "Enviando",
    "paused": "Pausado",
    "completed": "Concluído",
    "cancelled": "Cancelado",
    "failed": "Falhou",
}
IDENTITY = {
    "verified": "Verificado",
    "pending": "Verificação pendente",
    "failed": "Verificação falhou",
    "not_verified": "Não verificado",
    "not_applicable": "SMTP (não se aplica)",
}


@router.get("/envios-api", response_class=HTMLResponse)
async def api_sends(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    sistema: Annotated[str | None, Query(max_length=100)] = None,
    pagina: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The API sends, newest first, with sender, status, recipients and views."""
    senders = None if user.is_admin else user.sender_address_ids
    async with runtime.pool.acquire() as conn:
        items = await api_repo.ApiSendRepository(conn).listing(
            sistema or None, PAGE_SIZE + 1, (pagina - 1) * PAGE_SIZE, senders
        )
    return render(
        request,
        "api_sends/list.html",
        {
            "items": items[:PAGE_SIZE],
            "has_next": len(items) > PAGE_SIZE,
            "page": pagina,
            "system": sistema or "",
            "status": STATUS,
        },
    )


async def _keys_page(request: Request, runtime: RuntimeDep, **extra: object) -> HTMLResponse:
    async with runtime.pool.acquire() as conn:
        keys = await api_repo.ApiKeyRepository(conn).list()
        senders = await campaign_repo.SenderAddressRepository(conn).list()
        rules = await api_repo.RoutingRuleRepository(conn).list()
    return render(
        request,
        "api_sends/keys.html",
        {
            "keys": keys,
            "senders": senders,
            "sender_names": {s.sender_address_id: f"{s.name} <{s.email}>" for s in senders},
            "rules": rules,
            "error": None,
            "token": None,
            **extra,
        },
    )


@router.get("/envios-api/chaves", response_class=HTMLResponse)
async def keys(request: Request, runtime: RuntimeDep, admin: AdminDep) -> HTMLResponse:
    """API keys of the calling systems and the routing rules."""
    return await _keys_page(request, runtime)


def _text(form: object, name: str, limit: int) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value.strip()[:limit] if isinstance(value, str) else ""


@router.post("/envios-api/chaves", response_class=HTMLResponse)
async def create_key(request: Request, runtime: RuntimeDep, admin: AdminDep) -> HTMLResponse:
    """Create a key; the page shows its token this once."""
    form = await request.form()
    system, name = _text(form, "system", 100), _text(form, "name", 200)
    try:
        rate = int(_text(form, "rate_per_minute", 10) or "600")
        chosen = sorted({int(v) for v in form.getlist("senders[]") if isinstance(v, str)})
    except ValueError:
        return await _keys_page(request, runtime, error="Valores inválidos.")
    if not system or not name or not 1 <= rate <= 1_000_000:
        return await _keys_page(
            request, runtime, error="Informe o sistema, o nome e um limite por minuto válido."
        )
    token, prefix = api_keys.new_token()
    async with runtime.transaction() as conn:
        known = {s.sender_address_id for s in await campaign_repo.SenderAddressRepository(conn).list()}
        if not set(chosen) <= known:
            return await _keys_page(request, runtime, error="Endereço de envio desconhecido.")
        key = await api_repo.ApiKeyRepository(conn).create(
            system, name, prefix, api_keys.digest(token), rate, chosen
        )
        await audit(
            conn, admin, "api_key.created", f"api_key:{key.api_key_id}", system=system, senders=chosen
        )
    return await _keys_page(request, runtime, token=token, created=key)


@router.post("/envios-api/chaves/{api_key_id}/revogar")
async def revoke_key(api_key_id: int, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Revoke a key (it authenticates nothing from now on)."""
    async with runtime.transaction() as conn:
        await api_repo.ApiKeyRepository(conn).revoke(api_key_id)
        await audit(conn, admin, "api_key.revoked", f"api_key:{api_key_id}")
    return RedirectResponse("/console/envios-api/chaves", status_code=303)


@router.post("/envios-api/regras", response_class=HTMLResponse)
async def create_rule(request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Route a system's (and tenant's) message type to a sender address."""
    form = await request.form()
    system, tenant, kind = (
        _text(form, "system", 100),
        _text(form, "tenant", 100),
        _text(form, "message_type", 100),
    )
    try:
        sender_id = int(_text(form, "sender_address_id", 12))
    except ValueError:
        sender_id = 0
    async with runtime.transaction() as conn:
        rules = api_repo.RoutingRuleRepository(conn)
        known = {s.sender_address_id for s in await campaign_repo.SenderAddressRepository(conn).list()}
        if not system or not kind or sender_id not in known:
            error = "Informe o sistema, o tipo de mensagem e o remetente."
        elif await rules.taken(system, tenant, kind):
            error = "Já existe uma regra para esse sistema, tenant e tipo."
        else:
            rule = await rules.create(system, tenant, kind, sender_id)
            await audit(conn, admin, "routing_rule.created", f"routing_rule:{rule.routing_rule_id}")
            return RedirectResponse("/console/envios-api/chaves", status_code=303)
    return await _keys_page(request, runtime, error=error)


@router.post("/envios-api/regras/{routing_rule_id}/remover")
async def delete_rule(routing_rule_id: int, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Delete a routing rule."""
    async with runtime.transaction() as conn:
        await api_repo.RoutingRuleRepository(conn).delete(routing_rule_id)
        await audit(conn, admin, "routing_rule.deleted", f"routing_rule:{routing_rule_id}")
    return RedirectResponse("/console/envios-api/chaves", status_code=303)


@router.get("/envios-api/remetentes", response_class=HTMLResponse)
async def senders(request: Request, runtime: RuntimeDep, admin: AdminDep) -> HTMLResponse:
    """Each sender address with its SES identity status (read live) and a test send form."""
    async with runtime.pool.acquire() as conn:
        addresses = await campaign_repo.SenderAddressRepository(conn).list()
        accounts = {a.account_id: a for a in await campaign_repo.AccountRepository(conn).list()}
    secrets = SecretBox(runtime.settings.SECRET_KEYS)
    rows = []
    for address in addresses:
        account = accounts[address.account_id]
        try:
            check = await ses_identity.check(account, address.email, secrets)
            status, identity = IDENTITY[check.status], check.identity
        except ses_identity.IdentityUnavailable as exc:
            status, identity = f"Indisponível: {exc}", None
        rows.append({"sender": address, "account": account.name, "status": status, "identity": identity})
    return render(request, "api_sends/senders.html", {"rows": rows, "outcome": None})


@router.post("/envios-api/remetentes/{sender_address_id}/testar", response_class=HTMLResponse)
async def test_sender(
    sender_address_id: int, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """ "Testar envio": one message from this sender, with the provider's answers step by step."""
    to = _text(await request.form(), "to", 320)
    if "@" not in to:
        return render(
            request,
            "api_sends/test_result.html",
            {"outcome": None, "error": "Informe um e-mail válido.", "partial": _partial(request)},
        )
    outcome = await test_send.from_sender(runtime, sender_address_id, to)
    async with runtime.transaction() as conn:
        await audit(
            conn, admin, "sender_address.tested", f"sender_address:{sender_address_id}", to=to, ok=outcome.ok
        )
    return render(
        request,
        "api_sends/test_result.html",
        {"outcome": outcome, "error": None, "partial": _partial(request)},
    )


def _partial(request: Request) -> bool:
    """htmx asks for the fragment only."""
    return request.headers.get("hx-request") == "true"
