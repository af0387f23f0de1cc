"""The fault suite: a real campaign through every service while processes are killed, the broker and
the database restarted, and the SMTP server misbehaves; then a ledger of what each recipient got.

`python -m devtools.chaos --recipients 20000 --accounts 4` (what `make chaos` runs) or `run(Plan(...))`
from a test. Everything runs on a private PostgreSQL cluster and RabbitMQ node
(`devtools.private_infra`), never the machine's shared servers, which others use meanwhile.

During the campaigns, at fixed shares of the expected mail: the sink answers 454 throttling for a
while and drops connections for a while, refuses the `nouser…` recipients with 550 throughout;
a sender is SIGKILLed five times, an audience and a campaign process once each; RabbitMQ is
restarted once and PostgreSQL once. At the end: expected, delivered once, delivered twice,
never delivered (each explained by a failed or indeterminate outcome with its reason), and each
campaign's totals against what the sink counted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devtools.counting_sink import CountingSink
from devtools.fault_sink import FaultyResponder
from devtools.private_infra import PrivateInfra, free_port, private_infra
from devtools.stack import SERVICES, Stack
from services.migrate import MIGRATIONS
from shared import db

log = logging.getLogger("chaos")
logging.getLogger("httpx").setLevel(logging.WARNING)

REFUSED_PREFIX = "nouser"
MAX_CONNECTIONS = 3
_GROUP_CHUNK = 2000


@dataclass(frozen=True)
class Plan:
    """How big the run is; faults are placed at shares of `recipients`."""

    recipients: int = 3000
    accounts: int = 3
    rate_per_account: float = 40.0
    # One recipient in `refuse_every` is a `nouser…` address the sink refuses with 550.
    refuse_every: int = 200
    sender_kills: int = 5
    completion_timeout: float = 600.0


@dataclass
class Figures:
    """What the run found: the ledger, per campaign, and which faults happened when."""

    expected: int = 0
    delivered_once: int = 0
    delivered_twice: int = 0
    never_delivered: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    indeterminate: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unexplained: list[str] = field(default_factory=list)
    without_outcome: list[str] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    sink_faults: dict[str, int] = field(default_factory=dict)
    unready_during: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The report, one figure a line."""
        out = [
            f"recipients expected   {self.expected}",
            f"delivered once        {self.delivered_once}",
            f"delivered twice       {self.delivered_twice}",
            f"never delivered       {self.never_delivered}"
            f"  (failed {len(self.failed)}, indeterminate {len(self.indeterminate)},"
            f" skipped {len(self.skipped)}, unexplained {len(self.unexplained)})",
            f"no outcome at all     {len(self.without_outcome)}",
            f"sink faults           {dict(sorted(self.sink_faults.items()))}",
            f"not-ready in outages  {self.unready_during}",
            f"wall time             {self.seconds:.0f} s",
        ]
        reasons = Counter(self.failed.values()) + Counter(self.indeterminate.values())
        out += [f"  reason x{n}: {reason}" for reason, n in reasons.most_common(10)]
        out += [
            f"campaign {c['campaign_id']}: {c['status']} recipients={c['recipients']} sent={c['sent']}"
            f" failed={c['failed']} indeterminate={c['indeterminate']} skipped={c['skipped']}"
            f" | sink counted {c['sink_count']}"
            for c in self.campaigns
        ]
        out += [f"MISMATCH {m}" for m in self.mismatches]
        out += [f"event {e}" for e in self.events]
        return out

    def ok(self) -> bool:
        """Nothing lost, nothing twice, totals agree."""
        return (
            self.delivered_twice == 0
            and not self.unexplained
            and not self.without_outcome
            and not self.mismatches
            and all(c["status"] == "completed" for c in self.campaigns)
            and all(self.unready_during.values())
        )


def _until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


async def _prepare_database(admin_url: str) -> str:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute('CREATE DATABASE "mailer"')
    finally:
        await admin.close()
    url = f"{admin_url.rsplit('/', 1)[0]}/mailer"
    for schema, directory in MIGRATIONS.items():
        await db.migrate(url, schema, directory)
    return url


class _Run:
    def __init__(
        self, plan: Plan, infra: PrivateInfra, stack: Stack, sink: CountingSink, responder: FaultyResponder
    ):
        self.plan = plan
        self.infra = infra
        self.stack = stack
        self.sink = sink
        self.responder = responder
        # The campaign API may want the stack's service token (newer stacks know it).
        api_headers: Callable[[], dict[str, str]] = getattr(stack, "api_headers", dict)
        self.api = httpx.Client(base_url=f"{stack.url('campaign')}/api/v1", timeout=30, headers=api_headers())
        self.started = time.monotonic()
        self.figures = Figures()
        self.members: dict[int, list[str]] = {}

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:6.1f}s sink={self.sink.count():6d} {what}"
        self.figures.events.append(line)
        log.info(line)

    def _post(self, path: str, body: dict[str, Any], expected: int = 201) -> dict[str, Any]:
        def attempt() -> dict[str, Any] | None:
            answer = self.api.post(path, json=body)
            if answer.status_code == expected:
                result: dict[str, Any] = answer.json() if answer.content else {}
                return result or {"ok": True}
            log.warning("POST %s: %s %s", path, answer.status_code, answer.text[:300])
            return None

        result: dict[str, Any] = _until(attempt, 60, f"POST {path}", interval=1)
        return result

    def setup(self) -> list[int]:
        """Accounts, sender addresses, groups and campaigns; returns the campaign ids (not started)."""
        run = uuid.uuid4().hex[:6]
        per_account = self.plan.recipients // self.plan.accounts
        campaigns = []
        for a in range(self.plan.accounts):
            account = self._post(
                "/accounts",
                {
                    "name": f"Chaos {a} {run}",
                    "transport": "smtp",
                    "smtp": {"host": "127.0.0.1", "port": self.sink.port, "security": "none"},
                    "rate_per_second": self.plan.rate_per_account,
                    "max_connections": MAX_CONNECTIONS,
                },
            )
            sender = self._post(
                "/sender-addresses",
                {
                    "account_id": account["account_id"],
                    "name": "Mailer",
                    "email": f"chaos{a}-{run}@mailer.example",
                },
            )
            count = per_account + (self.plan.recipients - per_account * self.plan.accounts if a == 0 else 0)
            emails = [
                f"{REFUSED_PREFIX if n % self.plan.refuse_every == 7 else 'r'}{n}.a{a}.{run}@example.com"
                for n in range(count)
            ]
            group_ids = []
            for start in range(0, count, _GROUP_CHUNK):
                members = [
                    {"email": e, "name": f"Pessoa {i}"}
                    for i, e in enumerate(emails[start : start + _GROUP_CHUNK])
                ]
                group = self._post("/groups", {"name": f"Chaos {a}.{start}", "members": members})
                group_ids.append(group["group_id"])
            campaign = self._post(
                "/campaigns",
                {
                    "name": f"Chaos {a}",
                    "sender_address_id": sender["sender_address_id"],
                    "group_ids": group_ids,
                    "subject": "Olá, {{ nome }}",
                    "html": '<p>Olá {{ nome }}</p><p><a href="https://example.org/cursos">Cursos</a></p>',
                },
            )
            self.members[campaign["campaign_id"]] = emails
            campaigns.append(campaign["campaign_id"])
        return campaigns

    def wait_ready(self, timeout: float = 120) -> None:
        self.stack.wait_ready(timeout=timeout)

    def kill(self, service: str) -> None:
        self.note(f"SIGKILL {service}")
        self.stack.kill(service)
        self.stack.start(service)
        self.wait_ready()
        self.note(f"{service} ready again")

    def _not_ready(self, what: str) -> None:
        """Every service reports not-ready while `what` is away (its /readyz answers 503)."""

        def all_unready() -> bool:
            codes = {}
            for service in SERVICES:
                try:
                    codes[service] = httpx.get(f"{self.stack.url(service)}/readyz", timeout=5).status_code
                except httpx.HTTPError:
                    codes[service] = 0
            return all(code == 503 for code in codes.values())

        try:
            _until(all_unready, 20, f"every service not-ready without {what}", interval=0.5)
            self.figures.unready_during[what] = True
            self.note(f"every service reports not-ready without {what}")
        except TimeoutError:
            self.figures.unready_during[what] = False
            self.note(f"NOT every service reported not-ready without {what}")

    def restart_rabbit(self) -> None:
        self.note("RabbitMQ stopping")
        self.infra.rabbit.stop()
        self.note("RabbitMQ stopped")
        self._not_ready("RabbitMQ")
        self.infra.rabbit.start()
        self.note("RabbitMQ started")
        self.wait_ready(180)
        self.note("all services ready after RabbitMQ restart")

    def restart_postgres(self) -> None:
        self.note("PostgreSQL stopping")
        self.infra.postgres.stop()
        self._not_ready("PostgreSQL")
        self.infra.postgres.start()
        self.note("PostgreSQL started")
        self.wait_ready(180)
        self.note("all services ready after PostgreSQL restart")

    def throttle(self) -> None:
        self.responder.throttle_for(8)
        self.note("sink answers 454 throttling for 8 s")

    def drop(self) -> None:
        self.responder.drop_for(8, 0.2)
        self.note("sink drops 20% of connections for 8 s")

    def faults(self) -> list[tuple[float, str, Callable[[], None]]]:
        """(share of the expected mail at which, what, how), in order."""
        kills = [(share, f"sender kill {i + 1}", lambda: self.kill("sender")) for i, share in
                 enumerate([0.08, 0.25, 0.45, 0.65, 0.82][: self.plan.sender_kills])]  # fmt: skip
        others: list[tuple[float, str, Callable[[], None]]] = [
            (0.03, "audience kill", lambda: self.kill("audience")),
            (0.12, "throttling 8 s", self.throttle),
            (0.18, "campaign kill", lambda: self.kill("campaign")),
            (0.33, "RabbitMQ restart", self.restart_rabbit),
            (0.55, "PostgreSQL restart", self.restart_postgres),
            (0.72, "drops 8 s", self.drop),
        ]
        return sorted(kills + others, key=lambda fault: fault[0])

    def _reached(self, floor: int) -> bool:
        return self.sink.count() >= floor

    def campaign(self, campaign_id: int) -> dict[str, Any]:
        body: dict[str, Any] = self.api.get(f"/campaigns/{campaign_id}").json()
        return body

    def drive(self, campaigns: list[int]) -> None:
        for campaign_id in campaigns:
            self._post(f"/campaigns/{campaign_id}/start", {}, expected=202)
        self.note(f"started campaigns {campaigns}")
        expected_mail = self.plan.recipients
        for share, what, act in self.faults():
            floor = int(share * expected_mail)
            _until(partial(self._reached, floor), 300, f"{floor} messages before {what}")
            act()

        def finished() -> bool:
            states = [self.campaign(c) for c in campaigns]
            return all(s["status"] in ("completed", "failed", "cancelled") for s in states)

        try:
            _until(finished, self.plan.completion_timeout, "every campaign completed", interval=1)
            self.note("all campaigns finished")
        except TimeoutError:
            self.note("TIMEOUT waiting for completion")

    def results(self, campaign_id: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.api.get(
                f"/campaigns/{campaign_id}/results", params={"after": after, "limit": 1000}
            ).json()
            rows += page["items"]
            if page["next_after"] is None:
                return rows
            after = page["next_after"]

    def tally(self, campaigns: list[int]) -> Figures:
        figures = self.figures
        arrivals = self.sink.arrivals()
        received: Counter[str] = Counter(r for a in arrivals for r in a.recipients)
        per_campaign: Counter[str | None] = Counter(a.campaign for a in arrivals)
        figures.sink_faults = dict(self.responder.faults)
        for campaign_id in campaigns:
            state = self.campaign(campaign_id)
            results = {r["email"]: r for r in self.results(campaign_id)}
            expected = self.members[campaign_id]
            figures.expected += len(expected)
            for email in expected:
                n = received.get(email, 0)
                result = results.get(email)
                if n == 1:
                    figures.delivered_once += 1
                elif n > 1:
                    figures.delivered_twice += 1
                else:
                    figures.never_delivered += 1
                if result is None:
                    figures.without_outcome.append(email)
                    continue
                reason = result["reason"] or "(no reason given)"
                status = result["status"]
                if status == "failed":
                    figures.failed[email] = reason
                elif status == "indeterminate":
                    figures.indeterminate[email] = reason
                elif status == "skipped":
                    figures.skipped[email] = reason
                if n == 0 and status not in ("failed", "indeterminate"):
                    figures.unexplained.append(f"{email}: {status}")
                if n > 0 and status != "sent" and status != "indeterminate":
                    figures.mismatches.append(f"{email} received but {status}")
            sink_count = per_campaign.get(str(campaign_id), 0)
            figures.campaigns.append({**state, "sink_count": sink_count})
            if state["sent"] != sink_count - sum(
                1 for e in expected if received.get(e) and results.get(e, {}).get("status") == "indeterminate"
            ):
                figures.mismatches.append(
                    f"campaign {campaign_id}: sent {state['sent']} but the sink counted {sink_count}"
                )
            outcomes = Counter(r["status"] for r in results.values())
            for key in ("sent", "failed", "indeterminate", "skipped"):
                if state[key] != outcomes.get(key, 0):
                    figures.mismatches.append(
                        f"campaign {campaign_id}: total {key}={state[key]} but {outcomes.get(key, 0)} results"
                    )
        figures.seconds = time.monotonic() - self.started
        return figures


def run(plan: Plan, work_dir: Path | None = None) -> Figures:
    """Run the suite; the figures (the caller asserts on them). Service logs go to `work_dir`."""
    work = work_dir or Path(tempfile.mkdtemp(prefix="mailer-chaos-logs-"))
    responder = FaultyResponder(refuse=lambda rcpt: rcpt.startswith(REFUSED_PREFIX))
    with private_infra() as infra, CountingSink(responder=responder) as sink:
        log.info(
            "private PostgreSQL on %s, RabbitMQ node %s on %s",
            infra.postgres.port,
            infra.rabbit.node,
            infra.rabbit.port,
        )
        database_url = asyncio.run(_prepare_database(infra.postgres.url))
        stack = Stack(
            env={
                "DATABASE_URL": database_url,
                "RABBITMQ_URL": infra.rabbit.url,
                "ENVIRONMENT": "test",
                "LOG_FORMAT": "text",
                "LOG_LEVEL": "WARNING",
            },
            ports={name: free_port() for name in SERVICES},
            log_dir=work / "logs",
        )
        stack.start_all()
        try:
            stack.wait_ready(timeout=120)
            chaos = _Run(plan, infra, stack, sink, responder)
            campaigns = chaos.setup()
            chaos.drive(campaigns)
            return chaos.tally(campaigns)
        finally:
            stack.stop()


def main(argv: list[str] | None = None) -> None:
    """Command line: run the fault suite, print the figures, exit 1 unless all is well."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s per account")
    parser.add_argument("--logs", type=Path, default=None, help="directory for the services' logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    plan = Plan(
        recipients=args.recipients,
        accounts=args.accounts,
        rate_per_account=args.rate,
        completion_timeout=1800,
    )
    figures = run(plan, args.logs)
    print("\n".join(figures.lines()))
    sys.exit(0 if figures.ok() else 1)


if __name__ == "__main__":
    main()
