"""Services as real processes for a benchmark: the `Stack` pointed at its throwaway environment."""

from __future__ import annotations

from pathlib import Path

from bench import infra
from devtools.smtp_sink import free_port
from devtools.stack import SERVICES, Stack


def service_stack(env: infra.Environment, log_dir: Path, **settings: str) -> Stack:
    """A Stack on free ports whose services use `env`, log text at WARNING into `log_dir` (never
    to our stdout, which carries only figures), with extra environment `settings`."""
    return Stack(
        env={
            "DATABASE_URL": env.database_url,
            "RABBITMQ_URL": env.rabbitmq_url,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "text",
            **settings,
        },
        ports={name: free_port() for name in SERVICES},
        log_dir=log_dir,
    )
