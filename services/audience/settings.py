"""Settings of the audience service."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class AudienceSettings(ServiceSettings):
    """Audience: groups, and the resolution of a campaign's groups into queued recipients."""

    SERVICE_NAME: str = "audience"
    # Recipients per SendBatch: about 10 s of sending at 10 messages/s, so a redelivered batch
    # after a crash is small and a pause never waits on a big one.
    SEND_BATCH_SIZE: int = Field(default=100, ge=1, le=1000)
    # Members accepted in one static-group request.
    MAX_GROUP_MEMBERS_PER_REQUEST: int = Field(default=10_000, ge=1)
