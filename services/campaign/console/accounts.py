"""Endereços de envio SMTP: sending accounts (an SMTP server or an Amazon SES account, with its
rate, quota and reputation brake settings) and their sender addresses (From identities).

Passwords and secret keys are write-only: stored encrypted (shared.crypto), never rendered back;
an edit that leaves them empty keeps the stored one. Every change reaches the senders and bounce
through `account.configured` (published after commit by the outbox), like the JSON API's. An
account or address that campaigns were sent with cannot be removed (their results name it): the
account is deactivated instead. Administrators only; every change is audited (never a secret).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.campaign import repository as campaign_repo
from services.campaign.api import _account_event as account_event
from services.campaign.console.admin_repository import SenderAdminRepository
from services.campaign.console.admin_support import Form, IdPath
from services.campaign.console.audit import audit
from services.campaign.console.identity import AdminDep, settings_of
from services.campaign.console.templating import render
from services.campaign.models import Account
from shared import outbox
from shared.crypto import SecretBox
from shared.service import Runtime, RuntimeDep

router = APIRouter()

_BASE = "/console/enderecos-de-envio"
SECURITY = {"starttls": "STARTTLS (porta 587)", "tls": "TLS direto (porta 465)", "none": "Sem criptografia"}
# Edited settings named in the audit log (secrets only as "changed").
_AUDITED = (
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_username",
    "ses_region",
    "ses_access_key_id",
    "ses_endpoint_url",
    "rate_per_second",
    "daily_quota",
    "active",
    "bounce_control",
    "bounce_threshold",
    "complaint_threshold",
    "pause_hours",
)


def _host(account: Account) -> str:
    if account.transport == "ses":
        return f"Amazon SES ({account.ses_region})"
    return f"{account.smtp_host}:{account.smtp_port}"


@router.get("/enderecos-de-envio", response_class=HTMLResponse)
async def address_list(
    request: Request,
    runtime: RuntimeDep,
    admin: AdminDep,
    q: str | None = Query(default=None, max_length=200),
) -> HTMLResponse:
    """Sending accounts and their sender addresses, filtered by name, address or host."""
    async with runtime.pool.acquire() as conn:
        accounts = await campaign_repo.AccountRepository(conn).list()
        senders = await campaign_repo.SenderAddressRepository(conn).list()
    by_id = {a.account_id: a for a in accounts}
    term = (q or "").strip().lower()
    if term:
        senders = [
            s
            for s in senders
            if term in f"{s.sender_address_id} {s.name} {s.email} {by_id[s.account_id].name}".lower()
            or term in _host(by_id[s.account_id]).lower()
        ]
        shown = {s.account_id for s in senders}
        accounts = [a for a in accounts if a.account_id in shown or term in f"{a.name} {_host(a)}".lower()]
    return render(
        request,
        "accounts/list.html",
        {
            "accounts": accounts,
            "senders": senders,
            "by_id": by_id,
            "host": _host,
            "q": q or "",
            "done": request.query_params.get("feito"),
        },
    )


# --- accounts ----------------------------------------------------------------------------------


def _account_form_values(account: Account) -> dict[str, Any]:
    """An account as its edit form shows it (never a secret; rates as percentages)."""
    return {
        "name": account.name,
        "transport": account.transport,
        "smtp_host": account.smtp_host or "",
        "smtp_port": str(account.smtp_port or 587),
        "smtp_security": account.smtp_security or "starttls",
        "smtp_username": account.smtp_username or "",
        "ses_region": account.ses_region or "",
        "ses_access_key_id": account.ses_access_key_id or "",
        "ses_endpoint_url": account.ses_endpoint_url or "",
        "rate_per_second": _plain(account.rate_per_second),
        "daily_quota": str(account.daily_quota or ""),
        "active": "on" if account.active else "",
        "bounce_control": "on" if account.bounce_control else "",
        "bounce_threshold": _plain(account.bounce_threshold * 100),
        "complaint_threshold": _plain(account.complaint_threshold * 100),
        "pause_hours": _plain(account.pause_hours),
    }


def _plain(value: float) -> str:
    """A number as typed in a form: 10, 0,1, 12,5 (no float noise)."""
    return f"{round(value, 6):g}".replace(".", ",")


_NEW_ACCOUNT = {
    "transport": "smtp",
    "smtp_port": "587",
    "smtp_security": "starttls",
    "rate_per_second": "10",
    "active": "on",
    "bounce_threshold": "5",
    "complaint_threshold": "0,1",
    "pause_hours": "24",
}


def _account_page(
    request: Request, form: Form, account: Account | None, status_code: int = 200
) -> HTMLResponse:
    return render(
        request,
        "accounts/account_form.html",
        {"form": form, "account": account, "security": SECURITY},
        status_code=status_code,
    )


def _read_account(form: Form, current: Account | None, box: SecretBox) -> dict[str, Any]:
    """The stored columns the form asks for, checking each field (errors go on `form`)."""
    transport = current.transport if current else form.text("transport")
    if transport not in {"smtp", "ses"}:
        form.errors["transport"] = "Escolha SMTP ou Amazon SES."
    values: dict[str, Any] = {
        "transport": transport,
        "rate_per_second": form.number(
            "rate_per_second",
            minimum=0.01,
            maximum=10_000,
            message="Entre 0,01 e 10.000 mensagens por segundo.",
        ),
        "active": form.checked("active"),
        "bounce_control": form.checked("bounce_control"),
        "pause_hours": form.number(
            "pause_hours", minimum=0.1, maximum=720, message="Entre 0,1 e 720 horas (30 dias)."
        ),
    }
    quota = form.number(
        "daily_quota", minimum=1, maximum=100_000_000, message="Entre 1 e 100.000.000.", required=False
    )
    if quota is not None and not quota.is_integer():
        form.errors["daily_quota"] = "Use um número inteiro."
    values["daily_quota"] = int(quota) if quota is not None else None
    for field, label_max in (("bounce_threshold", 100.0), ("complaint_threshold", 100.0)):
        percent = form.number(field, minimum=0.001, maximum=label_max, message="Entre 0,001% e 100%.")
        values[field] = percent / 100 if percent is not None else None
    if current is None:
        values["name"] = form.text("name", required="Dê um nome à conta.")
    if transport == "smtp":
        port = form.number("smtp_port", minimum=1, maximum=65535, message="Porta entre 1 e 65535.")
        security = form.text("smtp_security")
        if security not in SECURITY:
            form.errors["smtp_security"] = "Escolha a segurança da conexão."
        password = str(form.values.get("smtp_password", ""))
        if len(password) > 1024:
            form.errors["smtp_password"] = "Senha longa demais."
        kept = current.smtp_password_encrypted if current else None
        values |= {
            "smtp_host": form.text("smtp_host", required="Informe o servidor SMTP.", max_length=255),
            "smtp_port": int(port) if port else None,
            "smtp_security": security,
            "smtp_username": form.text("smtp_username", max_length=255) or None,
            # Write-only: an empty field keeps the stored password.
            "smtp_password_encrypted": box.encrypt(password) if password else kept,
        }
    elif transport == "ses":
        secret = str(form.values.get("ses_secret_access_key", ""))
        kept = current.ses_secret_access_key_encrypted if current else None
        if not secret and not kept:
            form.errors["ses_secret_access_key"] = "Informe a chave secreta."
        if len(secret) > 1024:
            form.errors["ses_secret_access_key"] = "Chave longa demais."
        endpoint = form.text("ses_endpoint_url", max_length=255)
        if endpoint and not endpoint.startswith(("https://", "http://")):
            form.errors["ses_endpoint_url"] = "Use uma URL http(s)://, ou deixe vazio para a AWS."
        values |= {
            "ses_region": form.text(
                "ses_region", required="Informe a região (ex.: us-east-1).", max_length=40
            ),
            "ses_access_key_id": form.text(
                "ses_access_key_id", required="Informe o ID da chave de acesso.", max_length=128
            ),
            "ses_secret_access_key_encrypted": box.encrypt(secret) if secret else kept,
            "ses_endpoint_url": endpoint or None,
        }
    return values


def _stored(values: dict[str, Any], current: Account | None) -> dict[str, Any]:
    """Every column the repository writes: the form's values over the current ones."""
    base = current.model_dump() if current else {"use_provider_limits": True, "max_connections": 3}
    return {column: values.get(column, base.get(column)) for column in campaign_repo.ACCOUNT_COLUMNS} | {
        "name": values.get("name", base.get("name")),
        "transport": values["transport"],
    }


@router.get("/enderecos-de-envio/contas/nova", response_class=HTMLResponse)
async def new_account_form(request: Request, admin: AdminDep) -> HTMLResponse:
    """The form of a new sending account."""
    return _account_page(request, Form(dict(_NEW_ACCOUNT)), None)


@router.post("/enderecos-de-envio/contas/nova", response_model=None)
async def create_account(request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Create a sending account (audited); senders and bounce learn of it after commit."""
    form = await Form.read(request)
    values = _read_account(form, None, SecretBox(settings_of(runtime).SECRET_KEYS))
    async with runtime.transaction() as conn:
        accounts = campaign_repo.AccountRepository(conn)
        if form.ok and await accounts.name_taken(values["name"]):
            form.errors["name"] = "Já existe uma conta com este nome."
        if not form.ok:
            return _account_page(request, form, None, status_code=422)
        account = await accounts.create(_stored(values, None))
        await outbox.add_event(conn, account_event(account))
        await audit(
            conn,
            admin,
            "account.created",
            f"account:{account.account_id}",
            name=account.name,
            transport=account.transport,
        )
    return RedirectResponse(f"{_BASE}?feito=conta-criada", status_code=303)


async def _account(runtime: Runtime, account_id: int) -> Account:
    async with runtime.pool.acquire() as conn:
        return await campaign_repo.AccountRepository(conn).get(account_id)


@router.get("/enderecos-de-envio/contas/{account_id}/editar", response_class=HTMLResponse)
async def edit_account_form(
    account_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """A sending account's settings, to change (secrets are not shown)."""
    account = await _account(runtime, account_id)
    return _account_page(request, Form(_account_form_values(account)), account)


@router.post("/enderecos-de-envio/contas/{account_id}/editar", response_model=None)
async def edit_account(
    account_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> Response:
    """Save a sending account's settings (audited: which fields changed, never a secret's value)."""
    form = await Form.read(request)
    box = SecretBox(settings_of(runtime).SECRET_KEYS)
    async with runtime.transaction() as conn:
        accounts = campaign_repo.AccountRepository(conn)
        current = await accounts.get(account_id)
        values = _read_account(form, current, box)
        if not form.ok:
            form.values["name"] = current.name
            return _account_page(request, form, current, status_code=422)
        account = await accounts.update(account_id, _stored(values, current))
        await outbox.add_event(conn, account_event(account))
        before, after = current.model_dump(), account.model_dump()
        changed = {f: {"before": before[f], "after": after[f]} for f in _AUDITED if before[f] != after[f]}
        for secret in ("smtp_password_encrypted", "ses_secret_access_key_encrypted"):
            if before[secret] != after[secret]:
                changed[secret.removesuffix("_encrypted")] = {"changed": True}
        await audit(
            conn, admin, "account.changed", f"account:{account_id}", name=account.name, changed=changed
        )
    return RedirectResponse(f"{_BASE}?feito=conta-salva", status_code=303)


@router.get("/enderecos-de-envio/contas/{account_id}/remover", response_class=HTMLResponse)
async def remove_account_form(
    account_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """Confirmation of an account's removal (or why it cannot be removed)."""
    async with runtime.pool.acquire() as conn:
        account = await campaign_repo.AccountRepository(conn).get(account_id)
        used = await SenderAdminRepository(conn).account_has_campaigns(account_id)
        senders = [
            s for s in await campaign_repo.SenderAddressRepository(conn).list() if s.account_id == account_id
        ]
    return render(
        request,
        "accounts/remove.html",
        {"account": account, "used": used, "senders": senders, "kind": "account"},
    )


@router.post("/enderecos-de-envio/contas/{account_id}/remover", response_model=None)
async def remove_account(
    account_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> Response:
    """Remove an account without campaigns, with its sender addresses (audited); its senders stop."""
    async with runtime.transaction() as conn:
        account = await campaign_repo.AccountRepository(conn).get(account_id)
        admin_repo = SenderAdminRepository(conn)
        if await admin_repo.account_has_campaigns(account_id):
            return render(
                request,
                "accounts/remove.html",
                {"account": account, "used": True, "senders": [], "kind": "account"},
                status_code=409,
            )
        try:
            async with conn.transaction():
                await admin_repo.delete_account(account_id)
        except asyncpg.ForeignKeyViolationError:
            # An API key or a routing rule of API sends still names one of its addresses.
            return render(
                request,
                "accounts/remove.html",
                {"account": account, "used": True, "api": True, "senders": [], "kind": "account"},
                status_code=409,
            )
        # Senders and bounce keep no consumer or judgement for an account that is gone.
        await outbox.add_event(conn, account_event(account.model_copy(update={"active": False})))
        await audit(conn, admin, "account.removed", f"account:{account_id}", name=account.name)
    return RedirectResponse(f"{_BASE}?feito=conta-removida", status_code=303)


# --- sender addresses --------------------------------------------------------------------------


async def _sender_page(
    request: Request, runtime: Runtime, form: Form, sender_id: int | None, status_code: int = 200
) -> HTMLResponse:
    async with runtime.pool.acquire() as conn:
        accounts = await campaign_repo.AccountRepository(conn).list()
    return render(
        request,
        "accounts/sender_form.html",
        {"form": form, "accounts": accounts, "sender_id": sender_id},
        status_code=status_code,
    )


def _read_sender(form: Form, known_accounts: set[int]) -> tuple[int, str, str, str | None]:
    account = form.text("account_id")
    account_id = int(account) if account.isdigit() and int(account) < 2**31 else 0
    if account_id not in known_accounts:
        form.errors["account_id"] = "Escolha a conta de envio."
    name = form.text("name", required="Informe o nome do remetente.")
    email = form.text("email", required="Informe o e-mail do remetente.", max_length=320)
    reply_to = form.text("reply_to", max_length=320) or None
    for field, value in (("email", email), ("reply_to", reply_to)):
        if value and field not in form.errors:
            try:
                validate_email(value, check_deliverability=False)
            except EmailNotValidError:
                form.errors[field] = "E-mail inválido."
    return account_id, name, email, reply_to


@router.get("/enderecos-de-envio/novo", response_class=HTMLResponse)
async def new_sender_form(
    request: Request, runtime: RuntimeDep, admin: AdminDep, conta: int | None = Query(default=None, ge=1)
) -> HTMLResponse:
    """The form of a new sender address."""
    return await _sender_page(request, runtime, Form({"account_id": str(conta or "")}), None)


@router.post("/enderecos-de-envio/novo", response_model=None)
async def create_sender(request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Add a sender address to an account (audited)."""
    form = await Form.read(request)
    async with runtime.transaction() as conn:
        known = {a.account_id for a in await campaign_repo.AccountRepository(conn).list()}
        account_id, name, email, reply_to = _read_sender(form, known)
        senders = campaign_repo.SenderAddressRepository(conn)
        if form.ok and await senders.email_taken(email):
            form.errors["email"] = "Este e-mail já é um endereço de envio."
        if not form.ok:
            return await _sender_page(request, runtime, form, None, status_code=422)
        sender = await senders.create(account_id, name, email, reply_to)
        await audit(
            conn,
            admin,
            "sender.created",
            f"sender:{sender.sender_address_id}",
            email=email,
            account_id=account_id,
        )
    return RedirectResponse(f"{_BASE}?feito=endereco-criado", status_code=303)


@router.get("/enderecos-de-envio/{sender_id}/editar", response_class=HTMLResponse)
async def edit_sender_form(
    sender_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """A sender address, to change."""
    async with runtime.pool.acquire() as conn:
        sender = await campaign_repo.SenderAddressRepository(conn).get(sender_id)
    values = {"account_id": str(sender.account_id), "name": sender.name, "email": sender.email}
    values["reply_to"] = sender.reply_to or ""
    return await _sender_page(request, runtime, Form(values), sender_id)


@router.post("/enderecos-de-envio/{sender_id}/editar", response_model=None)
async def edit_sender(sender_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Change a sender address's name, e-mail and reply-to (audited). Its account stays: campaigns
    already made with it were sent through that account."""
    form = await Form.read(request)
    async with runtime.transaction() as conn:
        current = await campaign_repo.SenderAddressRepository(conn).get(sender_id)
        form.values["account_id"] = str(current.account_id)
        _, name, email, reply_to = _read_sender(form, {current.account_id})
        admin_repo = SenderAdminRepository(conn)
        if form.ok and await admin_repo.email_taken(email, sender_id):
            form.errors["email"] = "Este e-mail já é outro endereço de envio."
        if not form.ok:
            return await _sender_page(request, runtime, form, sender_id, status_code=422)
        await admin_repo.update(sender_id, name, email, reply_to)
        await audit(
            conn,
            admin,
            "sender.changed",
            f"sender:{sender_id}",
            before={"name": current.name, "email": current.email, "reply_to": current.reply_to},
            after={"name": name, "email": email, "reply_to": reply_to},
        )
    return RedirectResponse(f"{_BASE}?feito=endereco-salvo", status_code=303)


@router.get("/enderecos-de-envio/{sender_id}/remover", response_class=HTMLResponse)
async def remove_sender_form(
    sender_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """Confirmation of a sender address's removal (or why it cannot be removed)."""
    async with runtime.pool.acquire() as conn:
        sender = await campaign_repo.SenderAddressRepository(conn).get(sender_id)
        used = bool(await SenderAdminRepository(conn).in_use([sender_id]))
    return render(request, "accounts/remove.html", {"sender": sender, "used": used, "kind": "sender"})


@router.post("/enderecos-de-envio/{sender_id}/remover", response_model=None)
async def remove_sender(
    sender_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> Response:
    """Remove a sender address no campaign used (audited); users linked to it lose the link."""
    async with runtime.transaction() as conn:
        sender = await campaign_repo.SenderAddressRepository(conn).get(sender_id)
        admin_repo = SenderAdminRepository(conn)
        if await admin_repo.in_use([sender_id]):
            return render(
                request,
                "accounts/remove.html",
                {"sender": sender, "used": True, "kind": "sender"},
                status_code=409,
            )
        try:
            async with conn.transaction():
                await admin_repo.delete(sender_id)
        except asyncpg.ForeignKeyViolationError:
            return render(
                request,
                "accounts/remove.html",
                {"sender": sender, "used": True, "api": True, "kind": "sender"},
                status_code=409,
            )
        await audit(conn, admin, "sender.removed", f"sender:{sender_id}", email=sender.email)
    return RedirectResponse(f"{_BASE}?feito=endereco-removido", status_code=303)
