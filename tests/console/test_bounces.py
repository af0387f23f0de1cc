"""Subscrições bounce: the shared suppression list read from the real bounce service over HTTP,
filtered and paged, and an address removed after a confirmation; admins only, audited."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from services.campaign.bounce_client import BounceClient
from tests.console.admin_support import Person, admin_app, audience_app, bounce_app, db, people, store_root
from tests.console.conftest import ADMIN_EMAIL

__all__ = ["admin_app", "audience_app", "bounce_app", "db", "people", "store_root"]

People = tuple[Person, Person]


async def _suppress(db: asyncpg.Connection, email: str, reason: str = "bounce", ago: float = 0) -> None:
    await db.execute(
        "INSERT INTO bounce.suppressions (email, reason, diagnostic, account_id, campaign_id, suppressed_at)"
        " VALUES ($1, $2, '550 5.1.1 user unknown', 3, 41, $3)",
        email,
        reason,
        datetime.now(UTC) - timedelta(hours=ago),
    )


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


class TestSuppressionList:
    async def test_lists_the_addresses_with_reason_and_date(
        self, people: People, db: asyncpg.Connection, tag: str
    ) -> None:
        admin, _ = people
        await _suppress(db, f"cheio-{tag}@exemplo.com.br", "complaint")

        page = await admin.get("/console/subscricoes-bounce")

        assert page.status_code == 200
        assert f"cheio-{tag}@exemplo.com.br" in page.text
        assert "Denúncia de spam" in page.text
        assert re.search(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d", page.text)

    async def test_filters_by_address_and_reason(
        self, people: People, db: asyncpg.Connection, tag: str
    ) -> None:
        admin, _ = people
        await _suppress(db, f"um-{tag}@exemplo.com.br", "bounce")
        await _suppress(db, f"dois-{tag}@exemplo.com.br", "complaint")

        by_email = await admin.get(
            "/console/subscricoes-bounce", params={"email": f"UM-{tag}@exemplo.com.br"}
        )
        by_reason = await admin.get("/console/subscricoes-bounce", params={"motivo": "complaint"})
        nonsense = await admin.get(
            "/console/subscricoes-bounce", params={"motivo": "x' OR 1=1", "email": "<b>"}
        )

        assert f"um-{tag}@" in by_email.text and f"dois-{tag}@" not in by_email.text
        assert f"dois-{tag}@" in by_reason.text and f"um-{tag}@" not in by_reason.text
        assert nonsense.status_code == 200 and "<b>" not in nonsense.text

    async def test_pages_follow_each_other(self, people: People, db: asyncpg.Connection, tag: str) -> None:
        admin, _ = people
        for i in range(55):
            await _suppress(db, f"p{i:02}-{tag}@exemplo.com.br")

        first = await admin.get("/console/subscricoes-bounce")
        following = re.search(r'href="(\?antes=\d+)"', first.text)
        assert following, "a next-page link"
        second = await admin.get("/console/subscricoes-bounce" + following.group(1))

        assert f"p54-{tag}@" in first.text and f"p00-{tag}@" not in first.text
        assert f"p04-{tag}@" in second.text and f"p54-{tag}@" not in second.text

    async def test_a_normal_user_is_refused(self, people: People) -> None:
        _, person = people

        assert (await person.get("/console/subscricoes-bounce")).status_code == 403
        assert (await person.get("/console/subscricoes-bounce/remover?email=a@b.com")).status_code == 403
        assert (
            await person.post("/console/subscricoes-bounce/remover", {"email": "a@b.com"})
        ).status_code == 403

    async def test_bounce_away_is_a_503_page_not_a_crash(self, people: People, admin_app: object) -> None:
        admin, _ = people
        state = admin_app.state.runtime.state  # type: ignore[attr-defined]
        working = state["bounce"]
        state["bounce"] = BounceClient("http://127.0.0.1:9")
        try:
            page = await admin.get("/console/subscricoes-bounce")
        finally:
            state["bounce"] = working

        assert page.status_code == 503
        assert "Serviço indisponível" in page.text


class TestRemoval:
    async def test_asks_then_removes_and_audits(
        self, people: People, db: asyncpg.Connection, tag: str
    ) -> None:
        admin, _ = people
        email = f"volta-{tag}@exemplo.com.br"
        await _suppress(db, email)

        confirm = await admin.get("/console/subscricoes-bounce/remover", params={"email": email})
        removed = await admin.post("/console/subscricoes-bounce/remover", {"email": email})

        assert confirm.status_code == 200 and email in confirm.text and "reputação" in confirm.text
        assert removed.status_code == 303
        assert await db.fetchval("SELECT count(*) FROM bounce.suppressions WHERE email = $1", email) == 0
        entry = await db.fetchrow(
            "SELECT actor FROM campaign.audit_log WHERE action = 'suppression.removed' AND target = $1",
            f"email:{email}",
        )
        assert entry is not None and entry["actor"] == ADMIN_EMAIL

    async def test_an_address_not_on_the_list_is_a_field_error(self, people: People, tag: str) -> None:
        admin, _ = people

        page = await admin.post(
            "/console/subscricoes-bounce/remover", {"email": f"nunca-{tag}@exemplo.com.br"}
        )

        assert page.status_code == 404
        assert "não está na lista" in page.text and f"nunca-{tag}@exemplo.com.br" in page.text

    async def test_an_invalid_address_is_a_field_error_keeping_it(self, people: People) -> None:
        admin, _ = people

        page = await admin.post("/console/subscricoes-bounce/remover", {"email": "sem arroba"})

        assert page.status_code == 422
        assert "E-mail inválido." in page.text and 'value="sem arroba"' in page.text


class TestBounceClient:
    async def test_reads_and_removes_through_the_api(
        self, bounce_app: object, db: asyncpg.Connection, tag: str
    ) -> None:
        client = BounceClient("http://bounce", transport=httpx.ASGITransport(app=bounce_app))  # type: ignore[arg-type]
        email = f"cliente-{tag}@exemplo.com.br"
        await _suppress(db, email, "soft_bounce")

        page = await client.suppressions(email=email)

        assert [(s.email, s.reason, s.campaign_id) for s in page.items] == [(email, "soft_bounce", 41)]
        assert await client.remove_suppression(email) is True
        assert await client.remove_suppression(email) is False
        assert await client.reputation(2_000_000_000) is None
        await client.aclose()
