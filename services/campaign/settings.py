"""Settings of the campaign service."""

from __future__ import annotations

from shared.settings import ServiceSettings


class CampaignSettings(ServiceSettings):
    """Campaign: HTTP API (and console) over campaigns, accounts, sender addresses and results."""

    SERVICE_NAME: str = "campaign"
    # Audience's internal API, which owns groups.
    AUDIENCE_URL: str = "http://127.0.0.1:8001"
