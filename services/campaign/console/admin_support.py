"""What the administration screens share: the clients of bounce and of the file store (made on
first use and kept in the runtime's state, so tests put their own there first), form reading,
paging, and the page shown when another service does not answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.responses import HTMLResponse

from services.campaign.audience_client import AudienceClient
from services.campaign.bounce_client import BounceClient
from services.campaign.console.identity import settings_of
from services.campaign.console.templating import render
from shared.files import ManagedFileStore, file_store
from shared.service import Runtime

IdPath = Annotated[int, Path(ge=1, le=2**31 - 1)]
"""A row id in a console path: a PostgreSQL serial, so anything outside is a 422, never a driver error."""


def bounce_of(runtime: Runtime) -> BounceClient:
    """Campaign's client of bounce's admin API."""
    client = runtime.state.get("bounce")
    if client is None:
        client = runtime.state["bounce"] = BounceClient(settings_of(runtime).BOUNCE_URL)
    assert isinstance(client, BounceClient)
    return client


def audience_of(runtime: Runtime) -> AudienceClient:
    """Campaign's client of audience's internal API."""
    client: AudienceClient = runtime.state["audience"]
    return client


def files_of(runtime: Runtime) -> ManagedFileStore:
    """The file manager's store (FILE_STORE_URL)."""
    store = runtime.state.get("files")
    if store is None:
        store = runtime.state["files"] = file_store(settings_of(runtime).FILE_STORE_URL)
    managed: ManagedFileStore = store
    return managed


def unavailable(request: Request, service: str) -> HTMLResponse:
    """The page shown when `service` (its Portuguese name) did not answer: a 503, never a 500."""
    return render(
        request,
        "error.html",
        {
            "title": "Serviço indisponível",
            "message": f"O serviço de {service} não respondeu. Tente de novo em alguns instantes.",
        },
        status_code=503,
    )


@dataclass
class Form:
    """What a form was submitted with, and its field errors in Portuguese (kept to redisplay)."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def read(cls, request: Request) -> Form:
        """The request's form fields (a repeated field becomes a list), CSRF token left out."""
        form = await request.form()
        values: dict[str, Any] = {}
        for key in form:
            if key == "csrf_token":
                continue
            items = [v for v in form.getlist(key) if isinstance(v, str)]
            values[key] = items if len(items) > 1 or key.endswith("[]") else (items[0] if items else "")
        return cls(values)

    def text(self, name: str, *, required: str | None = None, max_length: int = 200) -> str:
        """A stripped text field; an error when required and empty or when too long."""
        value = str(self.values.get(name, "") or "").strip()
        if required and not value:
            self.errors[name] = required
        elif len(value) > max_length:
            self.errors[name] = f"Use no máximo {max_length} caracteres."
        return value

    def ids(self, name: str) -> list[int]:
        """A multi-valued field of ids (checkboxes); ones that are not numbers are dropped."""
        raw = self.values.get(name, [])
        items = raw if isinstance(raw, list) else [raw]
        return sorted({int(v) for v in items if str(v).isdigit() and int(v) < 2**31})

    def checked(self, name: str) -> bool:
        """A checkbox."""
        return str(self.values.get(name, "")).lower() in {"1", "on", "true", "sim"}

    def number(
        self, name: str, *, minimum: float, maximum: float, message: str, required: bool = True
    ) -> float | None:
        """A number typed with a comma or a point; an error outside [minimum, maximum]."""
        raw = str(self.values.get(name, "") or "").strip().replace(",", ".")
        if not raw:
            if required:
                self.errors[name] = "Preencha este campo."
            return None
        try:
            value = float(raw)
        except ValueError:
            self.errors[name] = "Digite um número."
            return None
        if not minimum <= value <= maximum or value != value:
            self.errors[name] = message
            return None
        return value

    @property
    def ok(self) -> bool:
        """Whether no field has an error."""
        return not self.errors


@dataclass(frozen=True)
class Page:
    """Offset paging of a list screen: one row more than shown is read to know a next page exists."""

    number: int
    size: int

    @property
    def offset(self) -> int:
        """Rows before this page."""
        return (self.number - 1) * self.size

    @property
    def fetch(self) -> int:
        """Rows to read."""
        return self.size + 1
