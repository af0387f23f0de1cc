"""Campanhas: the campaign list (filter, sort, paging, live status) and the per-row actions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from services.campaign.console.identity import UserDep
from services.campaign.console.repository import CAMPAIGN_SORTS, CampaignListRepository, CampaignQuery
from services.campaign.console.templating import render
from services.campaign.lifecycle import Status
from shared.service import RuntimeDep

router = APIRouter()

PAGE_SIZE = 25

STATUS_LABELS = {
    Status.DRAFT: "Rascunho",
    Status.QUEUED: "Na fila",
    Status.SENDING: "Enviando",
    Status.PAUSED: "Pausada",
    Status.COMPLETED: "Concluída",
    Status.CANCELLED: "Cancelada",
    Status.FAILED: "Falhou",
}
# Statuses that still change by themselves: their rows are polled.
LIVE = frozenset({Status.QUEUED, Status.SENDING, Status.PAUSED})


@router.get("/campanhas", response_class=HTMLResponse)
async def campaign_list(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    ordem: Annotated[str, Query(max_length=20)] = "id",
    sentido: Annotated[str, Query(max_length=4)] = "desc",
    pagina: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The campaigns the user may see, newest first."""
    query = CampaignQuery(
        search=q or None,
        sort=ordem if ordem in CAMPAIGN_SORTS else "id",
        descending=sentido != "asc",
        limit=PAGE_SIZE,
        offset=(pagina - 1) * PAGE_SIZE,
    )
    async with runtime.pool.acquire() as conn:
        rows, total = await CampaignListRepository(conn).page(
            query, None if user.is_admin else user.sender_address_ids
        )
    context = {
        "rows": rows,
        "total": total,
        "query": query,
        "q": q or "",
        "page": pagina,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "labels": STATUS_LABELS,
        "live": LIVE,
    }
    template = (
        "campaigns/rows.html"
        if request.headers.get("HX-Target") == "campaign-table"
        else "campaigns/list.html"
    )
    return render(request, template, context)
