"""Fixtures of the end-to-end tests: the SMTP sink and the whole stack as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.smtp_sink import free_port
from devtools.stack import SERVICES, Stack


@pytest.fixture
def stack(database_url: str, own_vhost: str, tmp_path: Path) -> Iterator[Stack]:
    """All five services as separate uvicorn processes on free ports; their logs are printed
    (and so shown by pytest when the test fails)."""
    services = Stack(
        env={
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": own_vhost,
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "text",
        },
        ports={name: free_port() for name in SERVICES},
        log_dir=tmp_path / "logs",
    )
    services.start_all()
    try:
        services.wait_ready(timeout=60)
        yield services
    finally:
        services.stop()
        for log in sorted((tmp_path / "logs").glob("*.log")):
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-6000:]}")
