"""Subscrições canceladas: recipients who left a campaign or every future campaign, with the date,
name, e-mail, reason they gave and the campaign they left from. Read from campaign's own results
(tracking reports each unsubscribe; campaign records it on the recipient's result, which has the
name and address that tracking does not keep). Administrators only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from services.campaign.console.admin_repository import UnsubscribeRepository
from services.campaign.console.admin_support import Page
from services.campaign.console.identity import AdminDep
from services.campaign.console.templating import render
from shared.service import RuntimeDep

router = APIRouter()

PAGE_SIZE = 50
SCOPES = {"all": "Todas as campanhas futuras", "campaign": "Somente esta campanha"}


@router.get("/subscricoes-canceladas", response_class=HTMLResponse)
async def unsubscribe_list(
    request: Request,
    runtime: RuntimeDep,
    admin: AdminDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    escopo: Annotated[str | None, Query(max_length=20)] = None,
    pagina: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Unsubscribes, newest first, filtered by name, e-mail, reason or campaign."""
    page = Page(pagina, PAGE_SIZE)
    scope = escopo if escopo in SCOPES else None
    async with runtime.pool.acquire() as conn:
        rows = await UnsubscribeRepository(conn).page(
            q.strip() if q else None, scope, page.fetch, page.offset
        )
    return render(
        request,
        "unsubscribes/list.html",
        {
            "rows": rows[: page.size],
            "has_next": len(rows) > page.size,
            "page": pagina,
            "q": q or "",
            "scope": scope or "",
            "scopes": SCOPES,
        },
    )
