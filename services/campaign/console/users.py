"""Usuários: who uses the console, their role and the sender addresses they may send from.

Identity (name, e-mail) comes from single sign-on and is not edited here: only the role and the
linked sender addresses ("Editar"), and removal ("Remover"). Administrators only; every change
is in the audit log. An administrator cannot demote or remove themselves, so the console always
keeps one administrator who can undo a mistake.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.campaign import repository as campaign_repo
from services.campaign.console.admin_support import Form, IdPath, Page
from services.campaign.console.audit import audit
from services.campaign.console.identity import AdminDep
from services.campaign.console.repository import Role, User, UserRepository
from services.campaign.console.templating import render
from services.campaign.models import SenderAddress
from shared.service import RuntimeDep

router = APIRouter()

PAGE_SIZE = 50
ROLES = {"admin": "Administrador", "normal": "Normal"}


def _sender_labels(senders: list[SenderAddress]) -> dict[int, str]:
    return {s.sender_address_id: f"{s.name} <{s.email}>" for s in senders}


@router.get("/usuarios", response_class=HTMLResponse)
async def user_list(
    request: Request,
    runtime: RuntimeDep,
    admin: AdminDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    pagina: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Users whose name or e-mail contains the filter, by code."""
    page = Page(pagina, PAGE_SIZE)
    async with runtime.pool.acquire() as conn:
        users = await UserRepository(conn).list(q.strip() if q else None, page.fetch, page.offset)
        senders = await campaign_repo.SenderAddressRepository(conn).list()
    return render(
        request,
        "users/list.html",
        {
            "users": users[: page.size],
            "has_next": len(users) > page.size,
            "page": pagina,
            "q": q or "",
            "senders": _sender_labels(senders),
            "roles": ROLES,
            "done": request.query_params.get("feito"),
        },
    )


async def _edit_page(
    request: Request, runtime: RuntimeDep, target: User, form: Form | None = None, status_code: int = 200
) -> HTMLResponse:
    async with runtime.pool.acquire() as conn:
        senders = await campaign_repo.SenderAddressRepository(conn).list()
    if form is None:
        form = Form({"role": target.role, "senders[]": [str(i) for i in target.sender_address_ids]})
    chosen = set(form.ids("senders[]"))
    return render(
        request,
        "users/edit.html",
        {"target": target, "senders": senders, "chosen": chosen, "form": form, "roles": ROLES},
        status_code=status_code,
    )


@router.get("/usuarios/{user_id}/editar", response_class=HTMLResponse)
async def edit_user_form(
    user_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """The role and sender addresses of a user, to change."""
    async with runtime.pool.acquire() as conn:
        target = await UserRepository(conn).get(user_id)
    return await _edit_page(request, runtime, target)


@router.post("/usuarios/{user_id}/editar", response_model=None)
async def edit_user(user_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Save a user's role and linked sender addresses (audited)."""
    form = await Form.read(request)
    role = form.text("role")
    if role not in ROLES:
        form.errors["role"] = "Escolha administrador ou normal."
    if user_id == admin.user_id and role == "normal":
        form.errors["role"] = "Você não pode retirar seu próprio perfil de administrador."
    chosen = form.ids("senders[]")
    async with runtime.transaction() as conn:
        users = UserRepository(conn)
        target = await users.get(user_id)
        known = {s.sender_address_id for s in await campaign_repo.SenderAddressRepository(conn).list()}
        if set(chosen) - known:
            form.errors["senders"] = "Um dos endereços escolhidos não existe mais. Confira a lista."
        if not form.ok:
            return await _edit_page(request, runtime, target, form, status_code=422)
        if role != target.role:
            await users.set_role(user_id, cast(Role, role))
            await audit(conn, admin, "user.role_changed", f"user:{user_id}", before=target.role, after=role)
        if chosen != sorted(target.sender_address_ids):
            await users.set_senders(user_id, chosen)
            await audit(
                conn,
                admin,
                "user.senders_changed",
                f"user:{user_id}",
                before=target.sender_address_ids,
                after=chosen,
            )
    return RedirectResponse("/console/usuarios?feito=salvo", status_code=303)


@router.get("/usuarios/{user_id}/remover", response_class=HTMLResponse)
async def remove_user_form(
    user_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """Confirmation of a user's removal."""
    async with runtime.pool.acquire() as conn:
        target = await UserRepository(conn).get(user_id)
    return render(
        request, "users/remove.html", {"target": target, "is_self": target.user_id == admin.user_id}
    )


@router.post("/usuarios/{user_id}/remover", response_model=None)
async def remove_user(user_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Remove a user (audited); their next login creates them again as a normal user."""
    async with runtime.transaction() as conn:
        users = UserRepository(conn)
        target = await users.get(user_id)
        if target.user_id == admin.user_id:
            return render(request, "users/remove.html", {"target": target, "is_self": True}, status_code=409)
        await users.remove(user_id)
        await audit(conn, admin, "user.removed", f"user:{user_id}", email=target.email, role=target.role)
    return RedirectResponse("/console/usuarios?feito=removido", status_code=303)
