"""Opens, clicks and unsubscribes (the page's two choices and RFC 8058 one-click) made on real
received messages reach the campaign's totals, per-recipient results, link table and export;
a forged token is refused and changes nothing. Five services as real processes, real
PostgreSQL and RabbitMQ, and a local SMTP sink."""

from __future__ import annotations

import csv
import html
import io
import re
import uuid
from typing import Any

import httpx
import pytest

from devtools.smtp_sink import ReceivedMessage, SmtpSink
from devtools.stack import Stack
from tests.support import until

pytestmark = pytest.mark.connected

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
LINK = "https://www.itausocial.org.br/programas?origem=email"


def _forged(url: str) -> str:
    """The URL with one character of its token changed."""
    head, token = url.rsplit("/", 1)
    suffix = ".gif" if token.endswith(".gif") else ""
    token = token.removesuffix(".gif")
    middle = len(token) // 2
    flipped = "A" if token[middle] != "A" else "B"
    forged = f"{head}/{token[:middle]}{flipped}{token[middle + 1 :]}{suffix}"
    assert forged != url
    return forged


def _pixel(message: ReceivedMessage) -> str:
    found = re.search(r'<img src="([^"]+/o/[^"]+)"', message.body("html"))
    assert found, message.body("html")
    return html.unescape(found.group(1))


def _click(message: ReceivedMessage) -> str:
    found = re.search(r'<a\b[^>]*href="([^"]+/c/[^"]+)"', message.body("html"))
    assert found, message.body("html")
    return html.unescape(found.group(1))


def _unsubscribe(message: ReceivedMessage) -> str:
    found = re.search(r"<(https?://[^>]+/u/[^>]+)>", str(message.message["List-Unsubscribe"]))
    assert found, message.message["List-Unsubscribe"]
    return found.group(1)


def test_opens_clicks_and_unsubscribes_show_in_the_results_and_export(stack: Stack, sink: SmtpSink) -> None:
    tag = uuid.uuid4().hex[:8]
    people = {
        key: {"email": f"{key}.{tag}@example.org", "name": name}
        for key, name in (
            ("ana", "Ana Souza"),
            ("bruno", "Bruno Lima"),
            ("carla", "Carla Dias"),
            ("davi", "Davi Rocha"),
            ("eva", "Eva Prado"),
        )
    }
    api = stack.campaign_api()
    account = api.post(
        "/accounts",
        json={
            "name": f"Sink {tag}",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
        },
    )
    assert account.status_code == 201, account.text
    sender = api.post(
        "/sender-addresses",
        json={
            "account_id": account.json()["account_id"],
            "name": "Itaú Social",
            "email": f"news.{tag}@mailer.example",
        },
    )
    assert sender.status_code == 201, sender.text
    group = api.post("/groups", json={"name": f"Equipe {tag}", "members": list(people.values())})
    assert group.status_code == 201, group.text
    campaign = api.post(
        "/campaigns",
        json={
            "name": "Programas",
            "sender_address_id": sender.json()["sender_address_id"],
            "group_ids": [group.json()["group_id"]],
            "subject": "Novidades, {{ nome }}",
            "html": f'<html><body><p>Olá {{{{ nome }}}}, conheça <a href="{LINK}">os programas</a>.</p></body></html>',
        },
    )
    assert campaign.status_code == 201, campaign.text
    assert campaign.json()["tracking"] == "full"
    campaign_id = campaign.json()["campaign_id"]
    assert api.post(f"/campaigns/{campaign_id}/start").status_code == 202

    def completed() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/campaigns/{campaign_id}").json()
        return body if body["status"] == "completed" else None

    assert until(completed, timeout=60), api.get(f"/campaigns/{campaign_id}").json()
    received = {m.recipients[0]: m for m in sink.received()}
    assert sorted(received) == sorted(p["email"] for p in people.values())
    mail = {key: received[person["email"]] for key, person in people.items()}
    browser = httpx.Client(headers={"user-agent": BROWSER}, timeout=10)
    bare = httpx.Client(timeout=10)  # python-httpx's own agent: a machine

    # Forged tokens first: refused with a plain 404, never a redirect, and (checked at the end)
    # no unsubscribe, open or click of Eva is recorded.
    eva = mail["eva"]
    for forged in (_forged(_pixel(eva)), _forged(_click(eva))):
        refused = browser.get(forged, follow_redirects=False)
        assert (refused.status_code, refused.headers.get("location")) == (404, None)
    refused = browser.post(_forged(_unsubscribe(eva)), data={"scope": "all", "reason": "forjado"})
    assert refused.status_code == 404
    refused = browser.post(_forged(_unsubscribe(eva)), data={"List-Unsubscribe": "One-Click"})
    assert refused.status_code == 404

    # Ana reads (her mail client loads the pixel; an HTTP library's fetch is a machine's) and clicks.
    pixel = browser.get(_pixel(mail["ana"]))
    assert (pixel.status_code, pixel.headers["content-type"]) == (200, "image/gif")
    assert bare.get(_pixel(mail["ana"])).status_code == 200
    followed = browser.get(_click(mail["ana"]), follow_redirects=False)
    assert (followed.status_code, followed.headers["location"]) == (302, LINK)
    # A link scanner follows Bruno's link: counted apart.
    assert bare.get(_click(mail["bruno"]), follow_redirects=False).status_code == 302

    # Bruno leaves this campaign and Carla every future one through the page; Davi's mail
    # provider sends the one-click POST.
    page = browser.get(_unsubscribe(mail["bruno"]))
    assert page.status_code == 200 and "apenas desta campanha" in page.text.lower()
    assert "de todas as campanhas futuras" in page.text.lower()
    done = browser.post(_unsubscribe(mail["bruno"]), data={"scope": "campaign", "reason": "Não me interessa"})
    assert done.status_code == 200, done.text
    done = browser.post(_unsubscribe(mail["carla"]), data={"scope": "all", "reason": "=muitos e-mails"})
    assert done.status_code == 200, done.text
    one_click = httpx.post(_unsubscribe(mail["davi"]), data={"List-Unsubscribe": "One-Click"}, timeout=10)
    assert one_click.status_code == 200, one_click.text

    expected_totals = {
        "recipients": 5,
        "sent": 5,
        "remaining": 0,
        "errors": 0,
        "skipped": 0,
        "indeterminate": 0,
        "read": 1,
        "opens": 1,
        "machine_opens": 1,
        "unique_clicks": 1,
        "total_clicks": 1,
        "machine_clicks": 1,
        "unsubscribed": 3,
        "unsubscribed_campaign": 1,
        "unsubscribed_all": 2,
        "bounces": 0,
        "complaints": 0,
    }

    def settled() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/campaigns/{campaign_id}/results").json()
        return body if body["totals"] == expected_totals else None

    final = until(settled, timeout=45)
    assert final, api.get(f"/campaigns/{campaign_id}/results").json()["totals"]
    assert api.get(f"/campaigns/{campaign_id}").json()["totals"] == expected_totals
    rows = {r["email"].split(".")[0]: r for r in final["items"]}
    assert sorted(rows) == sorted(people)
    assert all(r["status"] == "sent" and r["sent_at"] for r in rows.values())
    ana, bruno, carla, davi, eva_row = (rows[k] for k in ("ana", "bruno", "carla", "davi", "eva"))
    assert ana["opened_at"] and ana["urls"] == [LINK] and ana["clicks"] == 1
    assert (bruno["opened_at"], bruno["urls"]) == (None, [])  # the scanner's click is no one's
    assert bruno["unsubscribed_campaign_at"] and not bruno["unsubscribed_all_at"]
    assert bruno["unsubscribe_reason"] == "Não me interessa"
    assert carla["unsubscribed_all_at"] and not carla["unsubscribed_campaign_at"]
    assert davi["unsubscribed_all_at"] and not davi["unsubscribed_campaign_at"]
    assert (eva_row["opened_at"], eva_row["urls"], eva_row["unsubscribed_campaign_at"]) == (None, [], None)
    assert eva_row["unsubscribed_all_at"] is None

    # Filters by status and e-mail.
    def emails(**params: str) -> list[str]:
        items = api.get(f"/campaigns/{campaign_id}/results", params=params).json()["items"]
        return sorted(r["email"] for r in items)

    assert emails(status="read") == [people["ana"]["email"]]
    assert emails(status="clicked") == [people["ana"]["email"]]
    assert emails(status="unsubscribed") == sorted(people[k]["email"] for k in ("bruno", "carla", "davi"))
    assert emails(status="unsubscribed_all", q="carla") == [people["carla"]["email"]]

    links = api.get(f"/campaigns/{campaign_id}/results/links").json()
    assert links == [{"url": LINK, "clicks": 1, "unique_clickers": 1, "machine_clicks": 1}]

    exported = api.get(f"/campaigns/{campaign_id}/results.csv")
    assert exported.status_code == 200
    assert exported.content.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig")), delimiter=";"))
    lines = {r[1].split(".")[0]: dict(zip(table[0], r, strict=True)) for r in table[1:]}
    assert sorted(lines) == sorted(people)
    date = re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}$")
    assert date.match(lines["ana"]["Data envio"]) and date.match(lines["ana"]["Data leitura"])
    assert lines["ana"]["URLs acessadas"] == LINK
    assert date.match(lines["bruno"]["Descadastrado desta campanha"])
    assert lines["bruno"]["Descadastrado de todas"] == ""
    assert date.match(lines["carla"]["Descadastrado de todas"])
    assert lines["carla"]["Motivo descadastro"] == "'=muitos e-mails"  # inert in a spreadsheet
    assert date.match(lines["davi"]["Descadastrado de todas"])
    assert (lines["eva"]["Data leitura"], lines["eva"]["Descadastrado de todas"]) == ("", "")
