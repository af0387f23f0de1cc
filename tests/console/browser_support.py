"""What the console's browser tests share: the platform as real processes, and Debian's chromium
driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from devtools.smtp_sink import free_port
from devtools.stack import SERVICES, Stack

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent / "screenshots"


@contextmanager
def console_stack(
    database_url: str, vhost: str, tmp_path: Path, admin_email: str, ready_timeout: float, **env: str
) -> Iterator[Stack]:
    """Every service as its own process, with `admin_email` as the console's first administrator
    and the file manager in `tmp_path`; the end of each log printed when it stops."""
    services = Stack(
        env={
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": vhost,
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "text",
            "CONSOLE_ADMIN_EMAILS": admin_email,
            "FILE_STORE_URL": f"file://{tmp_path / 'files'}",
            **env,
        },
        ports={name: free_port() for name in SERVICES},
        log_dir=tmp_path / "logs",
    )
    (tmp_path / "files").mkdir(exist_ok=True)
    services.start_all()
    try:
        services.wait_ready(timeout=ready_timeout)
        yield services
    finally:
        services.stop()
        for log in sorted((tmp_path / "logs").glob("*.log")):
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-4000:]}")


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless chromium; screenshots go to SCREENSHOTS."""
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()
