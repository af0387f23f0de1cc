"""The results export ("EXPORTAR"): a CSV a spreadsheet in Brazil opens as it is.

- UTF-8 with a byte order mark (Excel reads UTF-8 only with it) and `;` between cells (the
  comma is Brazil's decimal separator, so Excel expects `;`); `,` on request.
- Dates as dd/mm/yyyy HH:MM:SS in America/Sao_Paulo, the way the console shows them.
- A cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is prefixed with `'`:
  names and addresses come from the public (groups, imports), and a spreadsheet would run them
  as formulas (CSV injection, OWASP).
- Rows are written chunk by chunk as the caller reads them, so memory stays bounded.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from services.campaign.models import Result

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
BOM = "\ufeff"
DELIMITERS: dict[str, str] = {"semicolon": ";", "comma": ","}
Delimiter = Literal["semicolon", "comma"]

HEADERS = (
    "Código",
    "E-mail",
    "Nome",
    "Situação",
    "Data envio",
    "Data leitura",
    "Motivo não envio",
    "URLs acessadas",
    "Cliques",
    "Descadastrado desta campanha",
    "Descadastrado de todas",
    "Motivo descadastro",
    "Bounce",
    "Tipo bounce",
    "Diagnóstico bounce",
    "Reclamação",
)
STATUS_WORDS = {
    "sent": "Enviado",
    "failed": "Erro",
    "skipped": "Não enviado",
    "indeterminate": "Indeterminado",
}
BOUNCE_WORDS = {"permanent": "Permanente", "transient": "Temporário", "undetermined": "Indeterminado"}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def local_time(moment: datetime | None) -> str:
    """A timestamp as São Paulo reads it (dd/mm/yyyy HH:MM:SS), or empty."""
    return "" if moment is None else moment.astimezone(SAO_PAULO).strftime("%d/%m/%Y %H:%M:%S")


def safe_cell(value: str) -> str:
    """The text of a cell, made inert if a spreadsheet would read it as a formula."""
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


def row(result: Result) -> list[str]:
    """One recipient's line, in HEADERS order; an unsubscribe or bounce shows its date."""
    return [
        safe_cell(value)
        for value in (
            str(result.recipient_id),
            result.email,
            result.name,
            STATUS_WORDS[result.status],
            local_time(result.sent_at),
            local_time(result.opened_at),
            result.reason or "" if result.status != "sent" else "",
            " ".join(result.urls),
            str(result.clicks),
            local_time(result.unsubscribed_campaign_at),
            local_time(result.unsubscribed_all_at),
            result.unsubscribe_reason or "",
            local_time(result.bounced_at),
            BOUNCE_WORDS.get(result.bounce_kind or "", ""),
            result.bounce_diagnostic or "",
            local_time(result.complained_at),
        )
    ]


def header(delimiter: Delimiter) -> str:
    """The byte order mark and the header line."""
    return BOM + lines([list(HEADERS)], delimiter)


def lines(rows: Iterable[list[str]], delimiter: Delimiter) -> str:
    """Rows as CSV text (quoted where needed, CRLF line ends as RFC 4180 says)."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=DELIMITERS[delimiter], lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()
