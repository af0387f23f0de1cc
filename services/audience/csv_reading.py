"""Reading the CSV files people really have: which encoding, which delimiter, which columns.

- Encoding: UTF-8, with or without a byte-order mark; a file that is not valid UTF-8 anywhere
  is Latin-1 (every byte sequence is), which is what spreadsheets in Brazil save. The whole
  file is checked while it is spooled to disk, so a bad byte on line 900,000 cannot switch the
  encoding after rows were read.
- Delimiter: `,` or `;`, whichever splits the first records into the same number of columns.
- Header: the e-mail column (email, e-mail, ...) and the name column (nome, name, ...) are found
  in any order, whatever their case and accents; every other column becomes a custom field
  for personalisation, keyed by its name made a template variable (`Data de Nascimento` ->
  `data_de_nascimento`). A file without a header is accepted when its first row holds an address.
- Rows: a row whose address is missing or invalid, or whose column count differs from the
  header's, is rejected with its line number (where the record starts: quoted fields may span
  lines) and the reason; blank lines are skipped. Nothing else is left out.
"""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from services.audience.addresses import verdict

BOM = codecs.BOM_UTF8
_SAMPLE_RECORDS = 20
_MAX_CONTENT = 1000
_EMAIL_HEADERS = frozenset({"email", "mail", "emailaddress", "enderecodeemail", "correioeletronico"})
_NAME_HEADERS = frozenset({"nome", "name", "nomecompleto", "fullname"})


class CsvProblem(ValueError):
    """The file as a whole cannot be imported (no e-mail column, repeated columns, empty)."""


class EncodingSniffer:
    """Fed the file's bytes in order; tells whether it is UTF-8 (with a BOM or not) or Latin-1."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._utf8 = True
        self._start = b""

    def feed(self, chunk: bytes) -> None:
        if len(self._start) < len(BOM):
            self._start += chunk[: len(BOM) - len(self._start)]
        if self._utf8:
            try:
                self._decoder.decode(chunk)
            except UnicodeDecodeError:
                self._utf8 = False

    @property
    def encoding(self) -> str:
        """The codec to read the whole file with (`utf-8-sig` drops the BOM)."""
        if self._utf8:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:  # the file ends inside a multi-byte character
                return "latin-1"
            return "utf-8-sig" if self._start == BOM else "utf-8"
        return "latin-1"


@dataclass(frozen=True)
class Layout:
    """Where things are in the file's rows."""

    delimiter: str
    width: int
    email: int
    name: int | None
    fields: tuple[tuple[str, int], ...]  # (field key, column)
    header: bool


@dataclass(frozen=True, slots=True)
class Member:
    """A valid row: the address normalised, the name, and the custom fields' values in the
    layout's order (PostgreSQL pairs them with the keys: no JSON built per row here)."""

    line: int
    email: str
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row left out, and why."""

    line: int
    reason: str
    content: str


def _folded(text: str) -> str:
    """Lower-case ASCII without accents: `Éndereço` -> `endereco`."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def field_key(header: str) -> str:
    """A column name as a template variable: `Data de Nascimento` -> `data_de_nascimento`."""
    key = re.sub(r"[^a-z0-9]+", "_", _folded(header)).strip("_")
    return key if key and not key[0].isdigit() else f"campo_{key}"


def _header_word(cell: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _folded(cell))


def sniff_delimiter(sample: str) -> str:
    """`;` or `,`: the one that splits the sample's first records into equal widths (wider wins)."""

    def score(delimiter: str) -> tuple[bool, int]:
        rows = []
        for row in csv.reader(sample.splitlines(), delimiter=delimiter):
            if row:
                rows.append(len(row))
            if len(rows) == _SAMPLE_RECORDS:
                break
        # The sample's last record may be cut in the middle: it does not count.
        steady = rows[:-1] if len(rows) > 1 else rows
        return (bool(rows) and rows[0] > 1 and all(w == rows[0] for w in steady)), rows[0] if rows else 0

    return max((",", ";"), key=score)


def layout_of(first: list[str], delimiter: str) -> Layout:
    """Read the first row as a header or, when it holds an address and no header word, as data."""
    words = [_header_word(cell) for cell in first]
    emails = [i for i, w in enumerate(words) if w in _EMAIL_HEADERS]
    names = [i for i, w in enumerate(words) if w in _NAME_HEADERS]
    if not emails:
        addresses = [i for i, cell in enumerate(first) if verdict(cell)[1] is None]
        if not addresses:
            raise CsvProblem(
                "o arquivo não tem coluna de e-mail: o cabeçalho precisa de uma coluna 'email' ou 'e-mail'"
            )
        others = [i for i in range(len(first)) if i != addresses[0]]
        name = others[0] if len(others) == 1 else None
        extra = tuple((f"coluna_{i + 1}", i) for i in others if i != name)
        return Layout(delimiter, len(first), addresses[0], name, extra, header=False)
    if len(emails) > 1 or len(names) > 1:
        raise CsvProblem("o cabeçalho tem mais de uma coluna de e-mail ou de nome")
    extra = tuple((field_key(first[i]), i) for i in range(len(first)) if i not in (emails[0], *names))
    keys = [key for key, _ in extra]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise CsvProblem(f"colunas com o mesmo nome no cabeçalho: {', '.join(repeated)}")
    return Layout(delimiter, len(first), emails[0], names[0] if names else None, extra, header=True)


def _content(row: list[str], delimiter: str) -> str:
    return delimiter.join(row)[:_MAX_CONTENT]


def _check(row: list[str], line: int, layout: Layout) -> Member | Rejected:
    if len(row) != layout.width:
        reason = f"a linha tem {len(row)} colunas e o cabeçalho tem {layout.width}"
        return Rejected(line, reason, _content(row, layout.delimiter))
    address = row[layout.email].strip()
    if not address:
        return Rejected(line, "e-mail ausente", _content(row, layout.delimiter))
    email, invalid = verdict(address)
    if invalid is not None:
        return Rejected(line, invalid, _content(row, layout.delimiter))
    name = row[layout.name].strip() if layout.name is not None else ""
    return Member(line, email, name, tuple(row[i].strip() for _, i in layout.fields))


def read(text: TextIO, sample: str) -> tuple[Layout, Iterator[Member | Rejected]]:
    """The file's layout, and its rows checked one by one (read lazily: bounded memory).

    `text` is opened with `newline=""` (quoted fields may hold line breaks); `sample` is its
    beginning, for the delimiter.
    """
    reader = csv.reader(text, delimiter=sniff_delimiter(sample))
    first = next((row for row in reader if row), None)
    if first is None:
        raise CsvProblem("o arquivo está vazio")
    layout = layout_of(first, reader.dialect.delimiter)

    def rows() -> Iterator[Member | Rejected]:
        if not layout.header:
            yield _check(first, reader.line_num, layout)
        start = reader.line_num + 1
        try:
            for row in reader:
                if row:
                    yield _check(row, start, layout)
                start = reader.line_num + 1
        except csv.Error as exc:  # e.g. a field past the csv module's size limit
            raise CsvProblem(f"linha {start}: o arquivo não pode ser lido como CSV ({exc})") from exc

    return layout, rows()
