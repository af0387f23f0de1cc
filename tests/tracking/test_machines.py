"""Telling machines' opens and clicks from readers'."""

from __future__ import annotations

import pytest

from services.tracking.machines import ClickBursts, is_machine_agent, is_machine_request

READERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17628; Pro)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0",
]
MACHINES = [
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    "Mozilla/5.0",
    "",
    "Barracuda Sentinel (EE)",
    "Mimecast",
    "Proofpoint-URL-Defense",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Slackbot-LinkExpanding 1.0",
    "Mozilla/5.0 (compatible; Baiduspider/2.0)",
    "Mozilla/5.0 (Windows NT 10.0) LinkPreview/1.0",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "python-httpx/0.27.0",
    "Go-http-client/1.1",
    "Mozilla/5.0 HeadlessChrome/126.0",
]


class TestAgents:
    @pytest.mark.parametrize("agent", READERS)
    def test_readers_mail_clients_and_browsers_are_not_machines(self, agent: str) -> None:
        assert not is_machine_agent(agent)
        assert not is_machine_request("GET", agent)

    @pytest.mark.parametrize("agent", MACHINES)
    def test_proxies_scanners_bots_and_scripts_are(self, agent: str) -> None:
        assert is_machine_agent(agent)

    def test_no_agent_at_all_is_a_machine(self) -> None:
        assert is_machine_agent(None)

    def test_a_head_request_is_a_machine_whatever_its_agent(self) -> None:
        assert is_machine_request("HEAD", READERS[0])


class TestClickBursts:
    def test_another_link_of_the_same_delivery_within_the_window_is_a_burst(self) -> None:
        bursts = ClickBursts(window=1.0)
        assert not bursts.is_burst(1, 2, "ip|ua", "https://a", now=10.0)
        assert bursts.is_burst(1, 2, "ip|ua", "https://b", now=10.4)
        # Chained: each click is measured from the previous one.
        assert bursts.is_burst(1, 2, "ip|ua", "https://c", now=11.3)

    def test_the_same_link_twice_is_a_double_click_not_a_burst(self) -> None:
        bursts = ClickBursts(window=1.0)
        assert not bursts.is_burst(1, 2, "ip|ua", "https://a", now=10.0)
        assert not bursts.is_burst(1, 2, "ip|ua", "https://a", now=10.2)

    def test_after_the_window_or_from_another_delivery_or_client_it_is_not(self) -> None:
        bursts = ClickBursts(window=1.0)
        bursts.is_burst(1, 2, "ip|ua", "https://a", now=10.0)
        assert not bursts.is_burst(1, 2, "ip|ua", "https://b", now=11.5)
        assert not bursts.is_burst(1, 3, "ip|ua", "https://c", now=11.6)
        assert not bursts.is_burst(1, 2, "other|ua", "https://c", now=11.7)

    def test_memory_stays_bounded(self) -> None:
        bursts = ClickBursts(window=60.0, capacity=3)
        for recipient in range(10):
            bursts.is_burst(1, recipient, "ip|ua", "https://a", now=float(recipient) / 100)
        # The oldest deliveries were forgotten: their second link is no longer seen as a burst.
        assert not bursts.is_burst(1, 0, "ip|ua", "https://b", now=0.5)
        assert bursts.is_burst(1, 9, "ip|ua", "https://b", now=0.5)
