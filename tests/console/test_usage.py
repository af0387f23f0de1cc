"""Exibir uso das contas: per account, sent in 24 h against its quota, rates against thresholds
with an SVG chart, pause, the campaign sending and its queue (rates and pause from the real bounce
service over HTTP); the brake override for administrators, confirmed, audited and honoured by
bounce."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from fastapi import FastAPI

from services.campaign.bounce_client import BounceClient, Reading
from services.campaign.console.usage import pause_reason, rate_chart
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
from tests.console.conftest import ADMIN_EMAIL

__all__ = ["admin_app", "audience_app", "bounce_app", "db", "people", "store_root"]

People = tuple[Person, Person]


async def _known_to_bounce(db: asyncpg.Connection, account_id: int, name: str) -> None:
    await db.execute(
        "INSERT INTO bounce.reputation_accounts (account_id, name, transport, active, bounce_control,"
        " bounce_threshold, complaint_threshold, pause_hours, configured_at)"
        " VALUES ($1, $2, 'smtp', true, false, 0.05, 0.001, 24, now()) ON CONFLICT DO NOTHING",
        account_id,
        name,
    )


async def _busy_account(db: asyncpg.Connection) -> tuple[int, int, int, int]:
    """An account that sent 3 messages today (1 yesterday), is sending a campaign with another queued
    behind it, was read 3 times by the brake and is paused by it."""
    account_id, sender_id, sending = await seed_campaign(db, name="Boletim de maio", priority=5)
    name = await db.fetchval("SELECT name FROM campaign.accounts WHERE account_id = $1", account_id)
    queued = await db.fetchval(
        "INSERT INTO campaign.campaigns (name, sender_address_id, subject, html, status, priority)"
        " VALUES ('Convite regional', $1, 'A', '<p>a</p>', 'queued', 7) RETURNING campaign_id",
        sender_id,
    )
    now = datetime.now(UTC)
    for i, at in enumerate([now - timedelta(hours=1)] * 3 + [now - timedelta(hours=30)], start=1):
        await db.execute(
            "INSERT INTO campaign.results (campaign_id, recipient_id, email, status, sent_at)"
            " VALUES ($1, $2, $3, 'sent', $4)",
            sending,
            i,
            f"d{i}@exemplo.com.br",
            at,
        )
    await db.execute("UPDATE campaign.campaigns SET sent = 4 WHERE campaign_id = $1", sending)
    await _known_to_bounce(db, account_id, name)
    for hours_ago, rate, paused in ((4, 0.008, False), (3, 0.01, False), (2, None, False), (1, 0.072, True)):
        await db.execute(
            "INSERT INTO bounce.reputation_history (account_id, polled_at, source, bounce_rate, complaint_rate,"
            " sent, paused) VALUES ($1, $2, 'counters', $3, $4, 500, $5)",
            account_id,
            now - timedelta(hours=hours_ago),
            rate,
            None if rate is None else 0.0004,
            paused,
        )
    await db.execute(
        "INSERT INTO bounce.reputation_pauses (account_id, paused_at, until, reason) VALUES ($1, $2, $3, $4)",
        account_id,
        now - timedelta(hours=1),
        datetime(2031, 1, 2, 15, 0, tzinfo=UTC),
        "reputation brake (counters): bounce rate 7.20% >= 5.00%",
    )
    return account_id, sender_id, sending, queued


class TestUsagePage:
    async def test_shows_sent_quota_rates_pause_chart_and_queue(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, _ = people
        account_id, _, sending, queued = await _busy_account(db)

        page = await admin.get("/console/uso-das-contas")

        assert page.status_code == 200
        card = page.text.split(f'id="conta-{account_id}"')[1].split("</section>")[0]
        assert re.search(r"3 <span[^>]*>de 1\.000</span>", card), "3 sent in 24 h of a 1,000 quota"
        assert "7,20%" in card and "limite 5,0%" in card
        assert "Pausada até 02/01/2031 12:00:00" in card
        assert "freio de reputação (contagem própria): taxa de bounce 7,20% ≥ limite de 5,00%" in card
        assert "<svg" in card and "<polyline" in card and "limite 5,0%" in card
        assert card.index(f"{sending} · Boletim de maio") < card.index(f"{queued} · Convite regional")
        assert "Na fila (1)" in card
        assert "Ignorar o freio de bounce" in card

    async def test_a_normal_user_sees_only_the_accounts_of_their_senders_without_the_override(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        _, person = people
        mine, sender_id, _, _ = await _busy_account(db)
        other, _, _ = await seed_campaign(db)
        user_id = await db.fetchval("SELECT user_id FROM campaign.users WHERE email = $1", person.email)
        await db.execute(
            "INSERT INTO campaign.user_sender_addresses (user_id, sender_address_id) VALUES ($1, $2)",
            user_id,
            sender_id,
        )

        page = await person.get("/console/uso-das-contas")

        assert page.status_code == 200
        assert f'id="conta-{mine}"' in page.text and f'id="conta-{other}"' not in page.text
        assert "Ignorar o freio" not in page.text
        assert (await person.get(f"/console/uso-das-contas/{mine}/ignorar-freio")).status_code == 403
        assert (
            await person.post(f"/console/uso-das-contas/{mine}/ignorar-freio", {"confirm": "on"})
        ).status_code == 403
        assert (await person.post(f"/console/uso-das-contas/{mine}/religar-freio")).status_code == 403

    async def test_bounce_away_costs_the_rates_not_the_page(
        self, people: People, db: asyncpg.Connection, admin_app: FastAPI
    ) -> None:
        admin, _ = people
        account_id, _, _, _ = await _busy_account(db)
        state = admin_app.state.runtime.state
        working = state["bounce"]
        state["bounce"] = BounceClient("http://127.0.0.1:9")
        try:
            page = await admin.get("/console/uso-das-contas", params={"horas": 168})
        finally:
            state["bounce"] = working

        assert page.status_code == 200
        assert "O serviço de bounce não respondeu" in page.text
        assert f'id="conta-{account_id}"' in page.text and "sem leituras no período" in page.text

    async def test_odd_periods_fall_back_to_a_day(self, people: People) -> None:
        admin, _ = people

        assert (await admin.get("/console/uso-das-contas", params={"horas": 5})).status_code == 200
        assert (await admin.get("/console/uso-das-contas", params={"horas": "x"})).status_code == 422


class TestBrakeOverride:
    async def test_the_confirmation_explains_the_risk_and_the_override_reaches_bounce(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, _ = people
        account_id, _, _, _ = await _busy_account(db)

        confirm = await admin.get(f"/console/uso-das-contas/{account_id}/ignorar-freio")
        unconfirmed = await admin.post(
            f"/console/uso-das-contas/{account_id}/ignorar-freio", {"hours": "6", "reason": "lista validada"}
        )
        done = await admin.post(
            f"/console/uso-das-contas/{account_id}/ignorar-freio",
            {"hours": "6", "reason": "lista validada", "confirm": "on"},
        )
        page = await admin.get("/console/uso-das-contas")

        assert "probation" in confirm.text and "esqueci minha senha" in confirm.text
        assert unconfirmed.status_code == 422 and "Confirme que entende o risco." in unconfirmed.text
        assert "lista validada" in unconfirmed.text, "the reason typed is kept"
        assert done.status_code == 303
        row = await db.fetchrow(
            "SELECT set_by, reason, until FROM bounce.reputation_overrides WHERE account_id = $1 AND cleared_at IS NULL",
            account_id,
        )
        assert row["set_by"] == ADMIN_EMAIL and row["reason"] == "lista validada"
        assert timedelta(hours=5.9) < row["until"] - datetime.now(UTC) < timedelta(hours=6.1)
        assert f"Freio ignorado por {ADMIN_EMAIL}" in page.text
        audit = await db.fetchrow(
            "SELECT actor, details FROM campaign.audit_log WHERE action = 'brake.overridden' AND target = $1",
            f"account:{account_id}",
        )
        assert audit["actor"] == ADMIN_EMAIL

        cleared = await admin.post(f"/console/uso-das-contas/{account_id}/religar-freio")

        assert cleared.status_code == 303
        assert (
            await db.fetchval(
                "SELECT count(*) FROM bounce.reputation_overrides WHERE account_id = $1 AND cleared_at IS NULL",
                account_id,
            )
            == 0
        )
        assert (
            await db.fetchval(
                "SELECT count(*) FROM campaign.audit_log WHERE action = 'brake.override_cleared' AND target = $1",
                f"account:{account_id}",
            )
            == 1
        )

    async def test_until_switched_off_and_bad_choices(self, people: People, db: asyncpg.Connection) -> None:
        admin, _ = people
        account_id, _, _, _ = await _busy_account(db)

        bad = await admin.post(
            f"/console/uso-das-contas/{account_id}/ignorar-freio",
            {"hours": "999", "reason": "", "confirm": "on"},
        )
        forever = await admin.post(
            f"/console/uso-das-contas/{account_id}/ignorar-freio",
            {"hours": "0", "reason": "campanha urgente", "confirm": "on"},
        )

        assert bad.status_code == 422
        assert (
            "Escolha por quanto tempo." in bad.text and "Explique por que o freio será ignorado." in bad.text
        )
        assert forever.status_code == 303
        assert (
            await db.fetchval(
                "SELECT until FROM bounce.reputation_overrides WHERE account_id = $1 AND cleared_at IS NULL",
                account_id,
            )
            is None
        )

    async def test_an_account_bounce_does_not_know_yet_is_explained(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, _ = people
        account_id, _, _ = await seed_campaign(db)

        page = await admin.post(
            f"/console/uso-das-contas/{account_id}/ignorar-freio",
            {"hours": "1", "reason": "teste", "confirm": "on"},
        )

        assert page.status_code == 409 and "ainda não conhece esta conta" in page.text

    async def test_clearing_when_nothing_is_overridden_is_a_404_page(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, _ = people
        account_id, _, _, _ = await _busy_account(db)

        assert (await admin.post(f"/console/uso-das-contas/{account_id}/religar-freio")).status_code == 404
        assert (await admin.get("/console/uso-das-contas/2000000000/ignorar-freio")).status_code == 404


class TestPauseReason:
    @pytest.mark.parametrize(
        ("reason", "shown"),
        [
            (
                "reputation brake (cloudwatch): bounce rate 5.10% >= 5.00%; complaint rate 0.120% >= 0.100%",
                "freio de reputação (CloudWatch): taxa de bounce 5,10% ≥ limite de 5,00%;"
                " taxa de denúncias 0,120% ≥ limite de 0,100%",
            ),
            (
                "provider refused: 535 Authentication failed",
                "o provedor recusou o envio: 535 Authentication failed",
            ),
            ("pausa manual do operador", "pausa manual do operador"),
        ],
    )
    def test_known_phrases_read_in_portuguese(self, reason: str, shown: str) -> None:
        assert pause_reason(reason) == shown


class TestRateChart:
    def test_draws_the_threshold_gaps_and_paused_stretches(self) -> None:
        start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        readings = [
            Reading(
                polled_at=start + timedelta(hours=h),
                source="counters",
                bounce_rate=r,
                complaint_rate=None,
                sent=1,
                paused=p,
            )
            for h, r, p in (
                (1, 0.01, False),
                (2, 0.02, False),
                (3, None, False),
                (4, 0.06, True),
                (5, 0.07, True),
            )
        ]

        svg = str(
            rate_chart(readings, "bounce_rate", 0.05, start, start + timedelta(hours=6), label="Bounce <x>")
        )

        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert svg.count("<polyline") == 2, "a gap where the rate was unknown"
        assert 'fill="#fffbea"' in svg, "paused stretches shaded"
        assert "limite 5,0%" in svg and "23/11 09:00" in svg, "São Paulo time on the axis"
        assert "Bounce &lt;x&gt;" in svg

    def test_no_readings_says_so(self) -> None:
        start = datetime(2026, 11, 23, tzinfo=UTC)

        svg = str(
            rate_chart([], "complaint_rate", 0.001, start, start + timedelta(days=1), label="c", digits=2)
        )

        assert "sem leituras no período" in svg and "limite 0,10%" in svg
