"""Subscrições bounce: the suppression list shared by every account (addresses that bounced for
good or complained), kept by the bounce service and read through its admin API. An address is
skipped by every campaign until an administrator removes it here (confirmed first, audited).
Administrators only."""

from __future__ import annotations

from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.campaign.bounce_client import BounceUnavailable
from services.campaign.console.admin_support import Form, bounce_of, unavailable
from services.campaign.console.audit import audit
from services.campaign.console.identity import AdminDep
from services.campaign.console.templating import render
from shared.service import RuntimeDep

router = APIRouter()

PAGE_SIZE = 50
REASONS = {
    "bounce": "Bounce permanente",
    "complaint": "Denúncia de spam",
    "soft_bounce": "Bounces temporários repetidos",
    "manual": "Incluído manualmente",
}
_SERVICE = "bounces"


@router.get("/subscricoes-bounce", response_class=HTMLResponse)
async def suppression_list(
    request: Request,
    runtime: RuntimeDep,
    admin: AdminDep,
    email: Annotated[str | None, Query(max_length=320)] = None,
    motivo: Annotated[str | None, Query(max_length=20)] = None,
    antes: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> HTMLResponse:
    """The suppression list, newest first, filtered by address and reason, by pages."""
    reason = motivo if motivo in REASONS else None
    try:
        page = await bounce_of(runtime).suppressions(
            email=email.strip() if email else None, reason=reason, before=antes, limit=PAGE_SIZE
        )
    except BounceUnavailable:
        return unavailable(request, _SERVICE)
    return render(
        request,
        "bounces/list.html",
        {
            "items": page.items,
            "next": page.next,
            "first_page": antes is None,
            "email": email or "",
            "reason": reason or "",
            "reasons": REASONS,
            "done": request.query_params.get("removido"),
        },
    )


@router.get("/subscricoes-bounce/remover", response_class=HTMLResponse)
async def remove_form(
    request: Request, admin: AdminDep, email: Annotated[str, Query(min_length=1, max_length=320)]
) -> HTMLResponse:
    """Confirmation of an address's removal from the list."""
    return render(request, "bounces/remove.html", {"email": email.strip()})


@router.post("/subscricoes-bounce/remover", response_model=None)
async def remove(request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Take an address off the list (audited): campaigns send to it again."""
    form = await Form.read(request)
    email = form.text("email", required="Informe o e-mail.", max_length=320)
    if form.ok:
        try:
            validate_email(email, check_deliverability=False)
        except EmailNotValidError:
            form.errors["email"] = "E-mail inválido."
    if not form.ok:
        return render(request, "bounces/remove.html", {"email": email, "form": form}, status_code=422)
    try:
        removed = await bounce_of(runtime).remove_suppression(email)
    except BounceUnavailable:
        return unavailable(request, _SERVICE)
    if not removed:
        form.errors["email"] = "Este endereço não está na lista."
        return render(request, "bounces/remove.html", {"email": email, "form": form}, status_code=404)
    async with runtime.transaction() as conn:
        await audit(conn, admin, "suppression.removed", f"email:{email.lower()}")
    return RedirectResponse("/console/subscricoes-bounce?removido=1", status_code=303)
