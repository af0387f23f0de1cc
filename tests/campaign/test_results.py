"""The results read model: counters move once per event (a redelivered event changes nothing),
per-recipient facts (read, clicks, links, unsubscribes, bounce, complaint), filters, keyset pages,
the per-link click table and the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.campaign import api as campaign_api
from services.campaign import export
from services.campaign.console.identity import Caller
from shared.contracts import (
    LinkClicked,
    MessageBounced,
    MessageComplained,
    MessageFailed,
    MessageOpened,
    MessageSent,
    UnsubscribeRequested,
    utc_now,
)
from shared.contracts.events import Event
from tests.campaign.test_api import _campaign
from tests.campaign.test_unsubscribe import _publish
from tests.support import Handled, eventually

pytestmark = pytest.mark.connected

T0 = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)  # 09:00:00 in São Paulo (UTC-3)


def _sent(campaign_id: int, recipient_id: int, email: str = "", name: str = "") -> MessageSent:
    return MessageSent(
        campaign_id=campaign_id,
        account_id=1,
        recipient_id=recipient_id,
        email=email or f"r{recipient_id}@example.org",
        name=name or f"Pessoa {recipient_id}",
        provider_message_id=f"p-{recipient_id}",
        sent_at=T0,
    )


async def _totals(api: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    response = await api.get(f"/campaigns/{campaign_id}/results")
    assert response.status_code == 200, response.text
    totals: dict[str, Any] = response.json()["totals"]
    return totals


async def _items(api: httpx.AsyncClient, campaign_id: int, **params: Any) -> list[dict[str, Any]]:
    response = await api.get(f"/campaigns/{campaign_id}/results", params={"limit": 1000} | params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _handled_all(api: httpx.AsyncClient, events: list[Event]) -> Handled:
    """Publish the events and wait until each one was handled successfully."""
    handled = Handled()
    api.app.state.runtime.broker.add_middleware(handled.middleware())  # type: ignore[attr-defined]
    counts: dict[str, int] = {}
    for event in events:
        await _publish(api, event)
        counts[str(event.event_id)] = counts.get(str(event.event_id), 0) + 1
    for event_id, times in counts.items():
        outcomes = await handled.wait_for(event_id, times)
        assert outcomes[-1] is None, outcomes
    return handled


async def _sent_all(api: httpx.AsyncClient, campaign_id: int, *recipients: int) -> None:
    await _handled_all(api, [_sent(campaign_id, r) for r in recipients])


class TestCounters:
    async def test_each_event_counts_once_and_a_redelivery_changes_nothing(
        self, api: httpx.AsyncClient
    ) -> None:
        campaign_id = (await _campaign(api))["campaign_id"]
        await _sent_all(api, campaign_id, 1, 2, 3)
        failed = MessageFailed(
            campaign_id=campaign_id, account_id=1, recipient_id=4, email="r4@example.org", reason="550 no"
        )
        first_open = MessageOpened(campaign_id=campaign_id, recipient_id=1, opened_at=T0 + timedelta(hours=1))
        second_open = MessageOpened(
            campaign_id=campaign_id, recipient_id=1, opened_at=T0 + timedelta(hours=2)
        )
        proxy_open = MessageOpened(campaign_id=campaign_id, recipient_id=2, opened_at=T0, machine=True)
        anonymous_open = MessageOpened(campaign_id=campaign_id, recipient_id=0, opened_at=T0)
        a, b = "https://ex.org/a", "https://ex.org/b"
        clicks = [
            LinkClicked(campaign_id=campaign_id, recipient_id=1, url=a, clicked_at=T0 + timedelta(hours=3)),
            LinkClicked(campaign_id=campaign_id, recipient_id=1, url=a, clicked_at=T0 + timedelta(hours=4)),
            LinkClicked(campaign_id=campaign_id, recipient_id=1, url=b, clicked_at=T0 + timedelta(hours=5)),
            LinkClicked(campaign_id=campaign_id, recipient_id=2, url=a, clicked_at=T0 + timedelta(hours=6)),
        ]
        scanner = LinkClicked(campaign_id=campaign_id, recipient_id=3, url=b, clicked_at=T0, machine=True)
        anonymous_click = LinkClicked(campaign_id=campaign_id, recipient_id=0, url=a, clicked_at=T0)
        bounce = MessageBounced(
            campaign_id=campaign_id,
            account_id=1,
            recipient_id=3,
            email="r3@example.org",
            kind="transient",
            subtype="MailboxFull",
            diagnostic="452 mailbox full",
            bounced_at=T0 + timedelta(minutes=5),
        )
        permanent = MessageBounced(
            campaign_id=campaign_id,
            account_id=1,
            recipient_id=3,
            email="r3@example.org",
            kind="permanent",
            subtype="General",
            diagnostic="550 5.1.1 user unknown",
            bounced_at=T0 + timedelta(minutes=6),
        )
        complaint = MessageComplained(
            campaign_id=campaign_id,
            account_id=1,
            recipient_id=2,
            email="r2@example.org",
            feedback_type="abuse",
            complained_at=T0 + timedelta(days=1),
        )
        this_campaign = UnsubscribeRequested(
            campaign_id=campaign_id, recipient_id=1, scope="campaign", reason="", requested_at=T0
        )
        every_campaign = UnsubscribeRequested(
            campaign_id=campaign_id, recipient_id=1, scope="all", reason="chega", requested_at=T0
        )
        once = [
            failed,
            first_open,
            second_open,
            proxy_open,
            anonymous_open,
            *clicks,
            scanner,
            anonymous_click,
            bounce,
            permanent,
            complaint,
            this_campaign,
            every_campaign,
        ]
        # Everything twice: the second delivery of each event must change nothing.
        await _handled_all(api, once + once)

        totals = await _totals(api, campaign_id)
        assert totals | {"recipients": None, "remaining": None} == {
            "recipients": None,
            "remaining": None,
            "sent": 3,
            "errors": 1,
            "skipped": 0,
            "indeterminate": 0,
            "read": 1,  # recipient 1 (twice opened); the proxy and the anonymous open apart
            "opens": 3,  # two of recipient 1, one anonymous
            "machine_opens": 1,
            "unique_clicks": 2,  # recipients 1 and 2; the anonymous click is no one's
            "total_clicks": 5,
            "machine_clicks": 1,
            "unsubscribed": 1,  # recipient 1, in both scopes, is one recipient
            "unsubscribed_campaign": 1,
            "unsubscribed_all": 1,
            "bounces": 1,  # recipient 3, bounced twice, is one
            "complaints": 1,
        }
        by_id = {r["recipient_id"]: r for r in await _items(api, campaign_id)}
        one, two, three, four = by_id[1], by_id[2], by_id[3], by_id[4]
        assert datetime.fromisoformat(one["opened_at"]) == first_open.opened_at
        assert (one["urls"], one["clicks"]) == ([a, b], 3)
        assert datetime.fromisoformat(one["clicked_at"]) == clicks[0].clicked_at
        assert one["unsubscribed_campaign_at"] and one["unsubscribed_all_at"]
        assert one["unsubscribe_reason"] == "chega"
        assert (two["opened_at"], two["urls"], two["complained_at"] is not None) == (None, [a], True)
        # The later permanent bounce's details win; the scanner's click is no recipient's.
        assert (three["bounce_kind"], three["bounce_diagnostic"], three["urls"]) == (
            "permanent",
            "550 5.1.1 user unknown",
            [],
        )
        assert datetime.fromisoformat(three["bounced_at"]) == bounce.bounced_at
        assert (four["status"], four["reason"]) == ("failed", "550 no")

        links = (await api.get(f"/campaigns/{campaign_id}/results/links")).json()
        assert links == [
            {"url": a, "clicks": 4, "unique_clickers": 2, "machine_clicks": 0},
            {"url": b, "clicks": 1, "unique_clickers": 1, "machine_clicks": 1},
        ]

    async def test_a_bounce_or_click_that_overtakes_the_outcome_is_counted_once_it_arrives(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id = (await _campaign(api))["campaign_id"]
        bounce = MessageBounced(
            campaign_id=campaign_id,
            account_id=1,
            recipient_id=1,
            email="r1@example.org",
            kind="permanent",
            bounced_at=utc_now(),
        )
        click = LinkClicked(
            campaign_id=campaign_id, recipient_id=1, url="https://ex.org/", clicked_at=utc_now()
        )
        await _publish(api, bounce)
        await _publish(api, click)
        await _publish(api, _sent(campaign_id, 1))

        async def counted() -> bool:
            totals = await _totals(api, campaign_id)
            assert (totals["bounces"], totals["unique_clicks"], totals["total_clicks"]) == (1, 1, 1)
            return True

        await eventually(counted, within=30)

    async def test_tracking_is_chosen_per_campaign_stored_and_editable_while_a_draft(
        self, api: httpx.AsyncClient
    ) -> None:
        assert (await _campaign(api))["tracking"] == "full"
        campaign = await _campaign(api, tracking="anonymous")
        assert campaign["tracking"] == "anonymous"
        edited = await api.patch(f"/campaigns/{campaign['campaign_id']}", json={"tracking": "off"})
        assert (edited.status_code, edited.json()["tracking"]) == (200, "off")
        assert (await api.get(f"/campaigns/{campaign['campaign_id']}")).json()["tracking"] == "off"
        bad = await api.post(
            "/campaigns",
            json={
                "tracking": "spy",
                "name": "x",
                "sender_address_id": 1,
                "group_ids": [1],
                "subject": "s",
                "html": "h",
            },
        )
        assert bad.status_code == 422

    async def test_a_started_campaign_cannot_be_edited_and_its_start_announces_the_tracking(
        self, api: httpx.AsyncClient, events: Any
    ) -> None:
        await events.listen("campaign.started")
        campaign = await _campaign(api, tracking="off")
        assert (await api.post(f"/campaigns/{campaign['campaign_id']}/start")).status_code == 202
        edited = await api.patch(f"/campaigns/{campaign['campaign_id']}", json={"name": "outro"})
        assert edited.status_code == 409
        found: list[dict[str, Any]] = []

        async def announced() -> bool:
            found.extend(
                e for e in await events("campaign.started") if e["campaign_id"] == campaign["campaign_id"]
            )
            return bool(found)

        await eventually(announced)
        assert found[0]["tracking"] == "off"


# Rows typed straight into the read model, to test what is read from it.
ROWS: list[dict[str, Any]] = [
    {
        "recipient_id": 1,
        "email": "ana.souza@gmail.com",
        "name": "Ana Souza",
        "status": "sent",
        "opened_at": T0,
    },
    {"recipient_id": 2, "email": "bruno@yahoo.com.br", "name": "Bruno Lima", "status": "sent"},
    {
        "recipient_id": 3,
        "email": "carla@gmail.com",
        "name": "Carla Dias",
        "status": "failed",
        "reason": "550 x",
    },
    {
        "recipient_id": 4,
        "email": "d_100%@ex.org",
        "name": '=HYPERLINK("http://evil")',
        "status": "sent",
        "clicked_at": T0,
        "bounced_at": T0,
        "bounce_kind": "permanent",
        "bounce_diagnostic": "550 5.1.1",
    },
    {
        "recipient_id": 5,
        "email": "eva@gmail.com",
        "name": 'Eva; "a Souza"',
        "status": "skipped",
        "reason": "unsubscribed",
        "unsubscribed_all_at": T0,
    },
    {
        "recipient_id": 6,
        "email": "-fabio@ex.org",
        "name": "+Fábio",
        "status": "sent",
        "opened_at": T0,
        "unsubscribed_campaign_at": T0,
        "complained_at": T0,
    },
]


async def _typed_campaign(api: httpx.AsyncClient, db: asyncpg.Connection, rows: list[dict[str, Any]]) -> int:
    campaign_id: int = (await _campaign(api))["campaign_id"]
    for row in rows:
        values = {"sent_at": T0 if row["status"] == "sent" else None} | row
        columns = ", ".join(values)
        marks = ", ".join(f"${i}" for i in range(2, len(values) + 2))
        await db.execute(
            f"INSERT INTO campaign.results (campaign_id, {columns}) VALUES ($1, {marks})",
            campaign_id,
            *values.values(),
        )
    await db.execute(
        "INSERT INTO campaign.result_links (campaign_id, recipient_id, url, clicks, first_clicked_at)"
        " VALUES ($1, 4, 'https://ex.org/b', 1, $2), ($1, 4, 'https://ex.org/a', 2, $3)",
        campaign_id,
        T0 + timedelta(minutes=2),
        T0 + timedelta(minutes=1),
    )
    return campaign_id


class TestFilters:
    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({}, [1, 2, 3, 4, 5, 6]),
            ({"q": "GMAIL"}, [1, 3, 5]),
            ({"q": "souza"}, [1, 5]),  # the name of 5, the address of 1
            ({"email": "souza"}, [1]),
            ({"name": "souza"}, [1, 5]),
            ({"email": "%"}, [4]),  # a wildcard is taken literally
            ({"email": "_"}, [4]),
            ({"status": "sent"}, [1, 2, 4, 6]),
            ({"status": "failed"}, [3]),
            ({"status": "skipped"}, [5]),
            ({"status": "read"}, [1, 6]),
            ({"status": "unread"}, [2, 4]),
            ({"status": "clicked"}, [4]),
            ({"status": "unsubscribed"}, [5, 6]),
            ({"status": "unsubscribed_campaign"}, [6]),
            ({"status": "unsubscribed_all"}, [5]),
            ({"status": "bounced"}, [4]),
            ({"status": "complained"}, [6]),
            ({"status": "read", "q": "gmail"}, [1]),
        ],
    )
    async def test_results_are_filtered_by_name_email_and_status(
        self, api: httpx.AsyncClient, db: asyncpg.Connection, params: dict[str, str], expected: list[int]
    ) -> None:
        campaign_id = await _typed_campaign(api, db, ROWS)
        assert [r["recipient_id"] for r in await _items(api, campaign_id, **params)] == expected

    async def test_an_unknown_status_is_refused(self, api: httpx.AsyncClient, db: asyncpg.Connection) -> None:
        campaign_id = await _typed_campaign(api, db, ROWS[:1])
        response = await api.get(f"/campaigns/{campaign_id}/results", params={"status": "lido"})
        assert response.status_code == 422

    async def test_keyset_pages_with_a_filter_cover_every_match_once(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        rows = [
            {
                "recipient_id": i,
                "email": f"p{i}@{'gmail.com' if i % 3 else 'ex.org'}",
                "name": f"P {i}",
                "status": "sent",
            }
            for i in range(1, 41)
        ]
        campaign_id = await _typed_campaign(api, db, rows)
        seen: list[int] = []
        after, pages = 0, 0
        while True:
            body = (
                await api.get(
                    f"/campaigns/{campaign_id}/results", params={"q": "gmail", "after": after, "limit": 7}
                )
            ).json()
            seen += [r["recipient_id"] for r in body["items"]]
            pages += 1
            if body["next_after"] is None:
                break
            after = body["next_after"]
        assert seen == [i for i in range(1, 41) if i % 3]
        assert pages == 4  # 27 matches: 7 + 7 + 7 + 6

    async def test_links_of_a_recipient_are_listed_in_first_click_order(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id = await _typed_campaign(api, db, ROWS)
        (four,) = await _items(api, campaign_id, status="clicked")
        assert four["urls"] == ["https://ex.org/a", "https://ex.org/b"]

    async def test_an_unknown_campaign_has_no_links_nor_export(self, api: httpx.AsyncClient) -> None:
        assert (await api.get("/campaigns/987654321/results/links")).status_code == 404
        assert (await api.get("/campaigns/987654321/results.csv")).status_code == 404


def _csv(response: httpx.Response, delimiter: str = ";") -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=delimiter))


class TestExport:
    async def test_the_export_is_a_brazilian_spreadsheet_with_inert_cells(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id = await _typed_campaign(api, db, ROWS)
        response = await api.get(f"/campaigns/{campaign_id}/results.csv")
        assert response.content.decode("utf-8").count(";") > response.content.decode("utf-8").count(",")
        table = _csv(response)
        assert table[0] == list(export.HEADERS)
        assert table[0][:8] == [
            "Código",
            "E-mail",
            "Nome",
            "Situação",
            "Data envio",
            "Data leitura",
            "Motivo não envio",
            "URLs acessadas",
        ]
        rows = {int(r[0]): dict(zip(table[0], r, strict=True)) for r in table[1:]}
        assert sorted(rows) == [1, 2, 3, 4, 5, 6]
        # 12:00 UTC is 09:00 in São Paulo.
        assert (rows[1]["Data envio"], rows[1]["Data leitura"]) == (
            "15/01/2026 09:00:00",
            "15/01/2026 09:00:00",
        )
        assert (rows[3]["Situação"], rows[3]["Motivo não envio"], rows[3]["Data envio"]) == (
            "Erro",
            "550 x",
            "",
        )
        # Formula-looking cells are made inert; the delimiter and quotes inside a cell survive.
        assert rows[4]["Nome"] == '\'=HYPERLINK("http://evil")'
        assert rows[6]["Nome"] == "'+Fábio"
        assert rows[6]["E-mail"] == "'-fabio@ex.org"
        assert rows[5]["Nome"] == 'Eva; "a Souza"'
        assert rows[4]["URLs acessadas"] == "https://ex.org/a https://ex.org/b"
        assert (rows[4]["Bounce"], rows[4]["Tipo bounce"], rows[4]["Diagnóstico bounce"]) == (
            "15/01/2026 09:00:00",
            "Permanente",
            "550 5.1.1",
        )
        assert (rows[5]["Descadastrado de todas"], rows[5]["Descadastrado desta campanha"]) == (
            "15/01/2026 09:00:00",
            "",
        )
        assert rows[6]["Descadastrado desta campanha"] == "15/01/2026 09:00:00"
        assert rows[6]["Reclamação"] == "15/01/2026 09:00:00"

    async def test_a_comma_export_with_the_page_filters(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id = await _typed_campaign(api, db, ROWS)
        response = await api.get(
            f"/campaigns/{campaign_id}/results.csv", params={"delimiter": "comma", "status": "read"}
        )
        table = _csv(response, ",")
        assert [r[0] for r in table[1:]] == ["1", "6"]
        assert table[1][1] == "ana.souza@gmail.com"

    async def test_a_long_export_streams_every_row_once_across_chunks(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id: int = (await _campaign(api))["campaign_id"]
        count = 4500  # more than two chunks of the export
        await db.execute(
            "INSERT INTO campaign.results (campaign_id, recipient_id, email, name, status, sent_at)"
            " SELECT $1, i, 'p' || i || '@ex.org', 'P ' || i, 'sent', $2 FROM generate_series(1, $3) i",
            campaign_id,
            T0,
            count,
        )
        # Read from the route's own stream (the in-process test client would buffer it whole).
        runtime = api.app.state.runtime  # type: ignore[attr-defined]
        response = await campaign_api.export_results(
            campaign_id, runtime, Caller(user=None), campaign_api.ResultQuery(), "semicolon"
        )
        chunks: list[bytes] = []
        async for chunk in response.body_iterator:
            assert isinstance(chunk, bytes)
            chunks.append(chunk)
        # The header, then one chunk per query of EXPORT_CHUNK rows: never all rows at once.
        assert len(chunks) == 1 + -(-count // campaign_api.EXPORT_CHUNK)
        assert max(c.count(b"\r\n") for c in chunks) == campaign_api.EXPORT_CHUNK
        table = list(csv.reader(io.StringIO(b"".join(chunks).decode("utf-8-sig")), delimiter=";"))
        assert [int(r[0]) for r in table[1:]] == list(range(1, count + 1))


class TestExportCells:
    @pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
    def test_a_cell_a_spreadsheet_would_run_is_prefixed(self, start: str) -> None:
        assert export.safe_cell(f"{start}1+1") == f"'{start}1+1"

    def test_other_cells_are_kept(self) -> None:
        assert export.safe_cell("ana@ex.org") == "ana@ex.org"
        assert export.safe_cell("") == ""

    def test_times_are_shown_in_sao_paulo(self) -> None:
        assert export.local_time(datetime(2026, 7, 1, 2, 30, 5, tzinfo=UTC)) == "30/06/2026 23:30:05"
        assert export.local_time(None) == ""
