"""Infrastructure settings every service inherits (environment variables, `.env` in development)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Well-known development values: fine on a laptop, refused anywhere else.
DEV_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:5432/mailer"
DEV_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
# A fixed Fernet key so a development database stays readable across restarts.
DEV_SECRET_KEY = "ZGV2LW9ubHktbWFpbGVyLWtleS0wMDAwMDAwMDAwMDA="
DEV_TRACKING_KEY = "dev-only-tracking-key"


class ServiceSettings(BaseSettings):
    """Fields shared by all services; each service subclasses this with its own."""

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    ENVIRONMENT: Literal["development", "test", "production"] = "development"
    SERVICE_NAME: str = "mailer"
    DATABASE_URL: str = DEV_DATABASE_URL
    DATABASE_POOL_SIZE: int = Field(default=10, ge=1)
    RABBITMQ_URL: str = DEV_RABBITMQ_URL
    # Unacknowledged messages per consumer: small, so a crash puts little back in flight.
    RABBITMQ_PREFETCH: int = Field(default=20, ge=1, le=1000)
    # Deliveries of one message (first try included) before it is dead-lettered.
    MAX_DELIVERY_ATTEMPTS: int = Field(default=8, ge=1)
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "json"
    # OTLP/HTTP collector base URL (e.g. http://jaeger:4318); tracing export is off when unset.
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None
    # Fernet keys, comma separated, newest first: the first encrypts, all decrypt (rotation).
    SECRET_KEYS: str = DEV_SECRET_KEY
    # HMAC keys for tracking and unsubscribe links, comma separated, newest first.
    TRACKING_SIGNING_KEYS: str = DEV_TRACKING_KEY
    # Public base URL of the tracking service, used in links inside messages.
    TRACKING_BASE_URL: str = "http://127.0.0.1:8004"
    # Where the file manager keeps files: file:///path (a relative file:./path is fine in
    # development) or s3://bucket/prefix?region=…&endpoint_url=… (credentials: AWS chain).
    FILE_STORE_URL: str = "file:./var/files"

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> ServiceSettings:
        if self.ENVIRONMENT == "production":
            weak = [
                name
                for name, value, dev in (
                    ("SECRET_KEYS", self.SECRET_KEYS, DEV_SECRET_KEY),
                    ("TRACKING_SIGNING_KEYS", self.TRACKING_SIGNING_KEYS, DEV_TRACKING_KEY),
                    ("RABBITMQ_URL", self.RABBITMQ_URL, DEV_RABBITMQ_URL),
                )
                if dev in value
            ]
            if weak:
                raise ValueError(f"development values must be replaced in production: {', '.join(weak)}")
        return self
