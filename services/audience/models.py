"""What audience's internal API accepts and returns, and the rows its repository hands back."""

from __future__ import annotations

from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, field_validator


def normalise_email(address: str) -> str:
    """The address as stored: syntax checked (no DNS), domain lower-cased; raises ValueError."""
    try:
        return validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"invalid e-mail address: {exc}") from exc


class MemberIn(BaseModel):
    """One recipient of a static group; `fields` are extra values for personalisation."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(max_length=320)
    name: str = Field(default="", max_length=300)
    fields: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        return normalise_email(value)


class GroupIn(BaseModel):
    """A new static group with its members."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    members: list[MemberIn] = Field(default_factory=list)


class GroupOut(BaseModel):
    """A group with its member count."""

    group_id: int
    name: str
    kind: str
    members: int
    created_at: datetime


class GroupCreated(GroupOut):
    """A created group, and how many repeated addresses of the request were kept once."""

    duplicates_ignored: int


class Resolution(BaseModel):
    """A campaign whose recipients are (being) queued to its sending account."""

    campaign_id: int
    account_id: int
    priority: int
    included: int
    dispatched_upto: int
    trace_headers: dict[str, str]
