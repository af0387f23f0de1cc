"""Settings of the bounce service."""

from __future__ import annotations

from shared.settings import ServiceSettings


class BounceSettings(ServiceSettings):
    """Bounce: provider feedback, the shared suppression list, account reputation."""

    SERVICE_NAME: str = "bounce"
