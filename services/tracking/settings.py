"""Settings of the tracking service."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class TrackingSettings(ServiceSettings):
    """Tracking: the public endpoints behind the links inside messages."""

    SERVICE_NAME: str = "tracking"
    # Opens and clicks held in memory on their way to RabbitMQ (bounded: see event_buffer).
    TRACKING_BUFFER_SIZE: int = Field(default=20_000, ge=1)
    # Opens and clicks published together (one `EngagementsRecorded` message, one write). Marshalling a batch
    # holds the event loop (~5 us an event), so a larger batch delays requests more for little gain.
    TRACKING_BATCH_SIZE: int = Field(default=500, ge=1)
    # How long the first event of a batch waits for others before the batch is published.
    TRACKING_BATCH_LINGER_SECONDS: float = Field(default=0.02, ge=0)
    # How long a request waits for room in a full buffer before its event is dropped.
    TRACKING_BUFFER_WAIT_SECONDS: float = Field(default=0.5, ge=0)
    # How long a stopping service keeps trying to publish what is still buffered.
    TRACKING_SHUTDOWN_FLUSH_SECONDS: float = Field(default=10.0, ge=0)
