"""Subscrições canceladas: every unsubscribe recorded on campaign results, newest first, with
name, e-mail, reason and campaign; filter and paging; admins only."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.console.admin_support import (
    Person,
    admin_app,
    audience_app,
    bounce_app,
    db,
    people,
    seed_campaign,
    store_root,
)

__all__ = ["admin_app", "audience_app", "bounce_app", "db", "people", "store_root"]

People = tuple[Person, Person]


async def _unsubscribed(
    db: asyncpg.Connection,
    campaign_id: int,
    recipient_id: int,
    email: str,
    *,
    scope: str,
    reason: str,
    at: datetime,
) -> None:
    await db.execute(
        "INSERT INTO campaign.results (campaign_id, recipient_id, email, name, status, sent_at,"
        " unsubscribed_campaign_at, unsubscribed_all_at, unsubscribe_reason)"
        " VALUES ($1, $2, $3, 'Maria Souza', 'sent', $4, $5, $6, $7)",
        campaign_id,
        recipient_id,
        email,
        at - timedelta(hours=1),
        at if scope == "campaign" else None,
        at if scope == "all" else None,
        reason,
    )


class TestUnsubscribeList:
    async def test_shows_date_name_email_reason_scope_and_campaign(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, _ = people
        tag = uuid.uuid4().hex[:8]
        _, _, campaign_id = await seed_campaign(db, name=f"Boletim {tag}")
        at = datetime(2026, 5, 12, 14, 30, 5, tzinfo=UTC)
        await _unsubscribed(
            db, campaign_id, 1, f"maria-{tag}@exemplo.com.br", scope="all", reason="Muitos e-mails", at=at
        )
        await db.execute(
            "INSERT INTO campaign.results (campaign_id, recipient_id, email, status) VALUES ($1, 2, $2, 'sent')",
            campaign_id,
            f"ficou-{tag}@exemplo.com.br",
        )

        page = await admin.get("/console/subscricoes-canceladas", params={"q": tag})

        assert page.status_code == 200
        assert f"maria-{tag}@exemplo.com.br" in page.text and "Maria Souza" in page.text
        assert "Muitos e-mails" in page.text and "Todas as campanhas futuras" in page.text
        assert f"Boletim {tag}" in page.text and f"/console/campanhas/{campaign_id}/resultado" in page.text
        assert "12/05/2026 11:30:05" in page.text, "São Paulo time"
        assert f"ficou-{tag}@" not in page.text

    async def test_filters_by_reason_and_scope_and_pages(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, _ = people
        tag = uuid.uuid4().hex[:8]
        _, _, campaign_id = await seed_campaign(db)
        start = datetime.now(UTC)
        for i in range(1, 53):
            await _unsubscribed(
                db,
                campaign_id,
                i,
                f"r{i:02}-{tag}@exemplo.com.br",
                scope="campaign" if i % 2 else "all",
                reason=f"motivo {tag}",
                at=start + timedelta(seconds=i),
            )

        first = await admin.get("/console/subscricoes-canceladas", params={"q": f"motivo {tag}"})
        second = await admin.get(
            "/console/subscricoes-canceladas", params={"q": f"motivo {tag}", "pagina": 2}
        )
        only_all = await admin.get("/console/subscricoes-canceladas", params={"q": tag, "escopo": "all"})

        assert f"r52-{tag}@" in first.text and f"r02-{tag}@" not in first.text
        assert "Próxima" in first.text
        assert f"r02-{tag}@" in second.text and f"r01-{tag}@" in second.text and "Próxima" not in second.text
        assert f"r02-{tag}@" in only_all.text and f"r01-{tag}@" not in only_all.text

    async def test_odd_filters_are_harmless(self, people: People) -> None:
        admin, _ = people

        for params in ({"q": "%_\\'"}, {"escopo": "drop table"}, {"q": "<script>x</script>"}):
            page = await admin.get("/console/subscricoes-canceladas", params=params)
            assert page.status_code == 200
            assert "<script>x" not in page.text
        assert (await admin.get("/console/subscricoes-canceladas", params={"pagina": 0})).status_code == 422

    async def test_a_normal_user_is_refused(self, people: People) -> None:
        _, person = people

        page = await person.get("/console/subscricoes-canceladas")

        assert page.status_code == 403
        assert not re.search(r"@exemplo\.com\.br", page.text)
