"""Settings of the campaign service."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.settings import ServiceSettings

# Well-known development values, refused in production (like the shared ones).
DEV_CAMPAIGN_API_TOKEN = "dev-only-campaign-api-token"
DEV_CONSOLE_SESSION_SECRET = "dev-only-console-session-secret"


class CampaignSettings(ServiceSettings):
    """Campaign: HTTP API (and console) over campaigns, accounts, sender addresses and results."""

    SERVICE_NAME: str = "campaign"
    # Audience's internal API, which owns groups.
    AUDIENCE_URL: str = "http://127.0.0.1:8001"
    # Bounce's admin API (suppression list, reputation, brake override) for the console.
    BOUNCE_URL: str = "http://127.0.0.1:8003"
    # The file manager's limits: bytes per uploaded file, and per CSV file of a group.
    FILE_UPLOAD_MAX_BYTES: int = Field(default=10 * 1024 * 1024, ge=1024)
    CSV_UPLOAD_MAX_BYTES: int = Field(default=256 * 1024 * 1024, ge=1024)
    # Where recipients fetch the file manager's files (images in sent mail); unset: the tracking
    # service's /files, the one service they reach. A CDN or public bucket URL may be set instead.
    FILES_PUBLIC_BASE_URL: str | None = None
    # Bearer token of other services, devtools and tests on /api/v1 (console users use their session).
    CAMPAIGN_API_TOKEN: str = Field(default=DEV_CAMPAIGN_API_TOKEN, min_length=16)
    # Signs the console's session cookie.
    CONSOLE_SESSION_SECRET: str = Field(default=DEV_CONSOLE_SESSION_SECRET, min_length=16)
    # Send the session cookie over HTTPS only (on behind TLS; off for http://127.0.0.1).
    CONSOLE_HTTPS_ONLY: bool = False
    CONSOLE_SESSION_MAX_AGE: int = Field(default=12 * 3600, ge=60)
    # E-mails that are administrators at their next login (comma separated): the first admins.
    CONSOLE_ADMIN_EMAILS: str = ""
    # Public base URL of the console (e.g. https://mailer.example.org) for the OIDC redirect;
    # unset: taken from the request.
    CONSOLE_BASE_URL: str | None = None
    # OpenID Connect single sign-on; without an issuer the console offers a development login.
    OIDC_ISSUER_URL: str | None = None
    OIDC_CLIENT_ID: str = ""
    OIDC_CLIENT_SECRET: str = ""
    OIDC_SCOPES: str = "openid email profile"

    @property
    def admin_emails(self) -> frozenset[str]:
        """CONSOLE_ADMIN_EMAILS as a set of lower-case addresses."""
        return frozenset(e.strip().lower() for e in self.CONSOLE_ADMIN_EMAILS.split(",") if e.strip())

    @property
    def files_public_base_url(self) -> str:
        """The base of the files' public URLs."""
        return self.FILES_PUBLIC_BASE_URL or f"{self.TRACKING_BASE_URL.rstrip('/')}/files"

    @property
    def development_login(self) -> bool:
        """Whether the console offers the name-and-e-mail login (never with an issuer or in production)."""
        return not self.OIDC_ISSUER_URL and self.ENVIRONMENT != "production"

    @model_validator(mode="after")
    def _refuse_development_values_in_production(self) -> CampaignSettings:
        if self.ENVIRONMENT == "production":
            weak = [
                name
                for name, value, dev in (
                    ("CAMPAIGN_API_TOKEN", self.CAMPAIGN_API_TOKEN, DEV_CAMPAIGN_API_TOKEN),
                    ("CONSOLE_SESSION_SECRET", self.CONSOLE_SESSION_SECRET, DEV_CONSOLE_SESSION_SECRET),
                )
                if value == dev
            ]
            if weak:
                raise ValueError(f"development values must be replaced in production: {', '.join(weak)}")
            if not self.OIDC_ISSUER_URL:
                raise ValueError("OIDC_ISSUER_URL is required in production (the development login is off)")
        return self
