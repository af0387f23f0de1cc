"""What audience's internal API accepts and returns, and the rows its repository hands back."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.audience.addresses import InvalidAddress, normalise

GroupKind = Literal["static", "csv", "remote"]


def normalise_email(address: str) -> str:
    """The address as stored: syntax checked (no DNS), domain lower-cased; raises ValueError."""
    try:
        return normalise(address)
    except InvalidAddress as exc:
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
    """A new group: static (with its members), csv (members come by upload) or remote (a URL,
    checked by the route against the fetch policy)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    kind: GroupKind = "static"
    members: list[MemberIn] = Field(default_factory=list)
    url: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _fits_the_kind(self) -> GroupIn:
        if self.kind == "remote" and self.url is None:
            raise ValueError("um grupo remoto precisa de url")
        if self.kind != "remote" and self.url is not None:
            raise ValueError("só um grupo remoto tem url")
        if self.kind != "static" and self.members:
            raise ValueError("só um grupo estático recebe membros na criação")
        return self


class GroupRename(BaseModel):
    """A group's new name."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)


class MembersIn(BaseModel):
    """Members added to an existing static group."""

    model_config = ConfigDict(extra="forbid")

    members: list[MemberIn] = Field(min_length=1)


class GroupOut(BaseModel):
    """A group with its member count; a remote group's URL is shown with its token hidden, and
    its members are only known when it is read (`members` 0)."""

    group_id: int
    name: str
    kind: GroupKind
    members: int
    fields: list[str]
    url: str | None
    created_at: datetime
    updated_at: datetime


class GroupCreated(GroupOut):
    """A created group, and how many repeated addresses of the request were kept once."""

    duplicates_ignored: int


class MembersAdded(BaseModel):
    """What adding members did: how many were new, how many the group already had."""

    group_id: int
    added: int
    duplicates_ignored: int
    members: int


class RemoteSource(BaseModel):
    """Where a remote group is read from (the URL in clear: never shown or logged)."""

    group_id: int
    name: str
    url: str


class ImportOut(BaseModel):
    """The outcome of one CSV import into a group."""

    import_id: int
    group_id: int
    filename: str
    encoding: str
    delimiter: str
    rows: int
    imported: int
    invalid: int
    duplicate: int
    created_at: datetime


class PreviewRow(BaseModel):
    """One member as a campaign would see it."""

    email: str
    name: str
    fields: dict[str, str]


class PreviewError(BaseModel):
    """A row that would be left out, or why the group cannot be read: at a CSV line or a remote page."""

    reason: str
    line: int | None = None
    page: int | None = None
    content: str = ""


class Preview(BaseModel):
    """A group's count, first rows and errors, read without starting a campaign.

    `members` is None for a remote group: only reading every page would tell.
    """

    group_id: int
    kind: GroupKind
    members: int | None
    rows: list[PreviewRow]
    errors: list[PreviewError]
    last_import: ImportOut | None = None


class Resolution(BaseModel):
    """A campaign whose recipients are (being) queued to its sending account."""

    campaign_id: int
    account_id: int
    priority: int
    included: int
    dispatched_upto: int
    trace_headers: dict[str, str]
