"""Settings of the tracking service."""

from __future__ import annotations

from shared.settings import ServiceSettings


class TrackingSettings(ServiceSettings):
    """Tracking: the public endpoints behind the links inside messages."""

    SERVICE_NAME: str = "tracking"
