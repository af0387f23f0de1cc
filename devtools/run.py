"""`make run`: migrate, start the SMTP sink and every service, and stop them all on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

import asyncpg
import uvicorn

from devtools.smtp_sink import SmtpSink, web_app
from devtools.stack import Stack
from services.migrate import MIGRATIONS
from shared import db
from shared.settings import ServiceSettings

SMTP_PORT = 1025
DEV_ADMIN_EMAIL = "admin@mailer.example"
SINK_PAGE_PORT = 8025


async def _prepare_database(dsn: str) -> None:
    """Create the database if it does not exist yet, then apply every migration."""
    name = dsn.rsplit("/", 1)[1].split("?", 1)[0]
    admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    for schema, directory in MIGRATIONS.items():
        applied = await db.migrate(dsn, schema, directory)
        if applied:
            print(f"  {schema}: {len(applied)} migration(s) applied")


def main() -> None:
    """Run the whole platform in the foreground."""
    settings = ServiceSettings()
    print("Preparing the database...")
    asyncio.run(_prepare_database(settings.DATABASE_URL))

    sink = SmtpSink(port=SMTP_PORT).start()
    page = uvicorn.Server(
        uvicorn.Config(web_app(sink), host="127.0.0.1", port=SINK_PAGE_PORT, log_level="warning")
    )
    threading.Thread(target=page.run, daemon=True).start()

    # The console's first administrator: whoever signs in with this e-mail (the development
    # login asks only a name and an e-mail when no OIDC_ISSUER_URL is set).
    admin = os.environ.get("CONSOLE_ADMIN_EMAILS") or DEV_ADMIN_EMAIL
    stack = Stack(env={"LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"), "CONSOLE_ADMIN_EMAILS": admin})
    stack.start_all()
    try:
        stack.wait_ready(timeout=90)
        print(
            "\nMailer is running.\n"
            f"  Console:          {stack.url('campaign')}/console  (administrator: sign in as {admin})\n"
            f"  API (campaign):   {stack.url('campaign')}/docs  (Authorization: Bearer {stack.api_token})\n"
            f"  Local mail sink:  http://127.0.0.1:{SINK_PAGE_PORT}  (SMTP on 127.0.0.1:{SMTP_PORT}, no TLS)\n"
            f"  Tracking:         {stack.url('tracking')}\n"
            "Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        print(f"Could not start: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        print("\nStopping...", flush=True)
        stack.stop()
        page.should_exit = True
        sink.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    main()
