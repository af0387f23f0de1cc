"""Settings of the bounce service."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, model_validator

from shared.settings import ServiceSettings

# What AWS's own SNS validators accept as the signing certificate's host, anchored; the URL's
# authority (host, and port if any) must match it whole, so the default allows no port.
AWS_SNS_HOST_PATTERN = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"


class SqsQueue(BaseModel):
    """An SQS queue an SES account's feedback topic delivers to, polled instead of HTTP."""

    queue_url: str
    region: str
    # The sending account whose feedback arrives on this queue.
    account_id: int
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    # Only for tests and local stacks (moto); None means AWS itself.
    endpoint_url: str | None = None


class BounceSettings(ServiceSettings):
    """Bounce: provider feedback, the shared suppression list, account reputation."""

    SERVICE_NAME: str = "bounce"
    # How often the reputation brake judges every active account.
    REPUTATION_POLL_SECONDS: float = Field(default=300, gt=0)
    # Counted rates (accounts without CloudWatch) are not judged below this many sends in 24 h:
    # 2 bounces in the first 20 messages are 10 % and mean nothing yet (SES too judges an
    # account only once it has sent a representative volume).
    REPUTATION_MIN_SENDS: int = Field(default=100, ge=1)
    # The window of the counted rates (accounts without CloudWatch): SES judges recent sends, and a
    # day's pause lets a day's bounces leave it. Counts are kept in buckets of 1/1440 of it (a
    # minute for a day, never under a second); only tests shorten it.
    REPUTATION_WINDOW_HOURS: float = Field(default=24, gt=0)
    # How far back the latest CloudWatch datapoint of SES's reputation rates is looked for.
    REPUTATION_CLOUDWATCH_LOOKBACK_HOURS: float = Field(default=24, gt=0)
    # Poll rows kept for the console's account usage view ("uso das contas").
    REPUTATION_HISTORY_DAYS: int = Field(default=90, ge=1)
    # SNS topics whose feedback is accepted, each with the sending account that publishes to
    # it (JSON: {"arn:aws:sns:us-east-1:123456789012:ses-feedback": 1}). Anything else is refused.
    SNS_TOPIC_ACCOUNTS: dict[str, int] = Field(default_factory=dict)
    # Only tests override this, to serve a locally made certificate from localhost:<port>.
    SNS_CERT_HOST_PATTERN: str = AWS_SNS_HOST_PATTERN
    # A signed message older than this is refused (a replay of an old, genuine message); SNS
    # retries a delivery for up to an hour, so the default leaves room beyond that.
    SNS_MAX_AGE_SECONDS: int = Field(default=7200, ge=60)
    # Request bodies over this are refused with 413 (SES notifications are a few KiB).
    SNS_MAX_BODY_BYTES: int = Field(default=256 * 1024, ge=1024)
    # Raw message delivery carries no signature: it is accepted only when this secret is set
    # and sent as the Basic-auth password (SNS puts the endpoint URL's credentials there).
    SNS_RAW_DELIVERY_SECRET: SecretStr | None = None
    # Feedback queues polled with SQS long polling (JSON list of SqsQueue).
    SQS_QUEUES: list[SqsQueue] = Field(default_factory=list)
    # Transient bounces of one address within the window that suppress it.
    SOFT_BOUNCE_LIMIT: int = Field(default=3, ge=1)
    SOFT_BOUNCE_WINDOW_DAYS: int = Field(default=30, ge=1)
    # Copy suppressions into each SES account's own account-level suppression list as well.
    SES_SUPPRESSION_MIRROR: bool = False

    @model_validator(mode="after")
    def _refuse_a_pool_the_brake_would_deadlock(self) -> BounceSettings:
        # The brake's poll holds one connection (its replica lock) while it judges each account on
        # another: with a single connection it would wait for itself, and every consumer and the
        # SNS endpoint with it.
        if self.DATABASE_POOL_SIZE < 2:
            raise ValueError("DATABASE_POOL_SIZE must be at least 2 for bounce (its brake holds one)")
        return self

    @model_validator(mode="after")
    def _refuse_a_test_certificate_host_in_production(self) -> BounceSettings:
        # Any other pattern lets whoever serves a certificate there forge feedback.
        if self.ENVIRONMENT == "production" and self.SNS_CERT_HOST_PATTERN != AWS_SNS_HOST_PATTERN:
            raise ValueError("SNS_CERT_HOST_PATTERN can only be changed outside production")
        return self
