"""Settings of the audience service."""

from __future__ import annotations

from pydantic import Field, IPvAnyNetwork

from shared.settings import ServiceSettings


class AudienceSettings(ServiceSettings):
    """Audience: groups, and the resolution of a campaign's groups into queued recipients."""

    SERVICE_NAME: str = "audience"
    # Recipients per SendBatch: about 10 s of sending at 10 messages/s, so a redelivered batch
    # after a crash is small and a pause never waits on a big one.
    SEND_BATCH_SIZE: int = Field(default=100, ge=1, le=1000)
    # SendBatches published (confirms awaited together) per checkpoint transaction: a million
    # recipients are 10,000 batches, and one transaction each is the dispatcher's main cost. A
    # crash re-publishes at most this many batches, which the sender's delivery ledger absorbs.
    SEND_BATCHES_PER_CHECKPOINT: int = Field(default=100, ge=1, le=500)
    # Members accepted in one static-group request.
    MAX_GROUP_MEMBERS_PER_REQUEST: int = Field(default=10_000, ge=1)
    # Largest CSV upload: a million rows with a few extra columns is about 100 MB.
    CSV_MAX_BYTES: int = Field(default=512 * 1024 * 1024, ge=1)
    # Remote groups (services/audience/remote.py): pages fetched ahead while earlier ones are consumed.
    REMOTE_PAGES_IN_FLIGHT: int = Field(default=4, ge=1, le=32)
    REMOTE_CONNECT_TIMEOUT: float = Field(default=5.0, gt=0)
    # Seconds without a byte from the server, per read (not per page).
    REMOTE_READ_TIMEOUT: float = Field(default=30.0, gt=0)
    # Retries of one page after a 5xx, 429, timeout or dropped connection (first try not counted).
    REMOTE_MAX_RETRIES: int = Field(default=4, ge=0)
    # First backoff delay in seconds, doubled per retry (with jitter).
    REMOTE_RETRY_BACKOFF: float = Field(default=0.5, ge=0)
    # Upper bound of one wait, also of a server's Retry-After: a remote group must not stall resolution.
    REMOTE_RETRY_MAX_DELAY: float = Field(default=30.0, ge=0)
    # Safety cap: a group announcing more records than this is refused before it is read.
    REMOTE_MAX_RECORDS: int = Field(default=2_000_000, ge=1)
    # Decoded body size of one page; reading stops past it (1,000 records are about 60 KB).
    REMOTE_MAX_PAGE_BYTES: int = Field(default=8 * 1024 * 1024, ge=1024)
    REMOTE_MAX_REDIRECTS: int = Field(default=3, ge=0, le=10)
    # SSRF allow-list for internal deployments and tests: CIDR networks (JSON list in the environment,
    # e.g. ["10.20.0.0/16"]) and exact host names whose addresses are not checked. Empty: public only.
    REMOTE_ALLOWED_NETWORKS: list[IPvAnyNetwork] = Field(default_factory=list)
    REMOTE_ALLOWED_HOSTS: list[str] = Field(default_factory=list)
