"""Apply every service's migrations: `python -m services.migrate [schema ...]`.

Runs before the services start (make run, the compose one-shot, the Kubernetes Job).
"""

from __future__ import annotations

from pathlib import Path

from shared import db

_HERE = Path(__file__).parent
MIGRATIONS = {
    name: _HERE / name / "migrations" for name in ("campaign", "audience", "sender", "bounce", "tracking")
}

if __name__ == "__main__":
    db.main(MIGRATIONS)
