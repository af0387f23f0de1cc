"""One service as a real process for a benchmark that talks to it over HTTP only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bench import infra
from bench.processes import service_stack
from devtools.stack import Stack

log = logging.getLogger(__name__)
# Stack.wait_ready polls /readyz with httpx, which logs every request at INFO.
logging.getLogger("httpx").setLevel(logging.WARNING)

READY_TIMEOUT = 60.0


def log_tail(path: Path, chars: int = 4000) -> str:
    """The end of a process's log file, to show when a benchmark fails."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@asynccontextmanager
async def running(env: infra.Environment, service: str, log_dir: Path) -> AsyncIterator[Stack]:
    """`service` started in `env` and ready; its log's end shown if the benchmark fails, the
    process stopped on the way out."""
    stack = service_stack(env, log_dir)
    try:
        stack.start(service)
        await asyncio.to_thread(stack.wait_ready, READY_TIMEOUT)
        yield stack
    except BaseException:
        log.error("%s log (end):\n%s", service, log_tail(log_dir / f"{service}.log"))
        raise
    finally:
        await asyncio.to_thread(stack.stop)
