"""Starts every service as its own process (uvicorn), waits until each is ready, stops them all.

Used by `make run` and by the end-to-end tests, so both run the stack the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from services.campaign.settings import DEV_CAMPAIGN_API_TOKEN

SERVICES = ("campaign", "audience", "sender", "bounce", "tracking")
DEFAULT_PORTS = {"campaign": 8000, "audience": 8001, "sender": 8002, "bounce": 8003, "tracking": 8004}


@dataclass
class Stack:
    """The five services on 127.0.0.1, each on its port, sharing `env`."""

    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def url(self, service: str) -> str:
        """Base URL of a service."""
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def api_token(self) -> str:
        """The bearer token campaign's /api/v1 accepts from this stack's tools and tests."""
        return (
            self.env.get("CAMPAIGN_API_TOKEN")
            or os.environ.get("CAMPAIGN_API_TOKEN")
            or DEV_CAMPAIGN_API_TOKEN
        )

    def api_headers(self) -> dict[str, str]:
        """Headers that authenticate a call to campaign's /api/v1 as an internal service."""
        return {"Authorization": f"Bearer {self.api_token}"}

    def campaign_api(self, timeout: float = 15.0) -> httpx.Client:
        """A client of campaign's /api/v1, authenticated with the service token."""
        return httpx.Client(
            base_url=f"{self.url('campaign')}/api/v1", timeout=timeout, headers=self.api_headers()
        )

    def service_env(self) -> dict[str, str]:
        """The environment every service process gets."""
        return {
            **os.environ,
            **self.env,
            "CAMPAIGN_API_TOKEN": self.api_token,
            "AUDIENCE_URL": self.url("audience"),
            "BOUNCE_URL": self.url("bounce"),
            "TRACKING_BASE_URL": self.env.get("TRACKING_BASE_URL", self.url("tracking")),
        }

    def start(self, service: str) -> None:
        """Start one service (again, if it was stopped or killed)."""
        output: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{service}.log").open("ab")
            self._logs.append(output)
        command = [
            sys.executable, "-m", "uvicorn", f"services.{service}.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.ports[service]), "--no-access-log",
        ]  # fmt: skip
        self.processes[service] = subprocess.Popen(
            command, env=self.service_env(), stdout=output, stderr=subprocess.STDOUT if output else None
        )

    def start_all(self) -> None:
        """Start every service."""
        for service in SERVICES:
            self.start(service)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every service answers /readyz with 200; raise if one exits or time runs out."""
        deadline = time.monotonic() + timeout
        pending = set(self.processes)
        while pending:
            for service in sorted(pending):
                code = self.processes[service].poll()
                if code is not None:
                    raise RuntimeError(f"{service} exited with code {code}")
                try:
                    if httpx.get(f"{self.url(service)}/readyz", timeout=2).status_code == 200:
                        pending.discard(service)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f} s: {', '.join(sorted(pending))}")
            time.sleep(0.2)

    def kill(self, service: str) -> None:
        """SIGKILL one service, as a crash would."""
        process = self.processes[service]
        process.kill()
        process.wait()

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM every service, then SIGKILL what has not exited after `grace` seconds."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()
