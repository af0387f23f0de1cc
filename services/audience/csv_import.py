"""Importing a CSV file into a group, in bounded memory, through PostgreSQL COPY.

The upload is written to a temporary file as it arrives (memory holds one chunk) while its
encoding is decided over every byte. Rows are then read in chunks in a worker thread (parsing
and checking a million rows takes seconds the event loop must keep for other requests), and
each chunk is COPYed: valid rows into a temporary staging table, from which one INSERT ...
SELECT adds the new members (de-duplicated), rejected rows into `import_errors`. The import is
one transaction, under the group's row lock: a failed or concurrent upload never leaves a
half-imported file.

The rejected lines download as CSV (`linha`, `motivo`, `conteudo`) in the file's own delimiter,
UTF-8 with a BOM (so spreadsheets read the accents), cells that a spreadsheet would run as a
formula prefixed with `'` (CSV injection).
"""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO

import asyncpg

from services.audience import repository as audience_repo
from services.audience.csv_reading import EncodingSniffer, Member, Rejected, read
from services.audience.models import ImportOut

CHUNK_ROWS = 10_000
_SAMPLE_BYTES = 64 * 1024
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_REPORT_ROWS = 1000

ValidRow = tuple[int, str, str, tuple[str, ...]]
ErrorRow = tuple[int, int, str, str]


class TooLarge(Exception):
    """The upload passed the size limit."""


@dataclass
class Spooled:
    """An upload on disk, and how it is encoded."""

    file: IO[bytes]
    encoding: str
    size: int

    def close(self) -> None:
        self.file.close()


async def spool(chunks: AsyncIterator[bytes], limit: int) -> Spooled:
    """Write the upload to a temporary file; TooLarge past `limit` bytes."""
    # Not a `with`: the open file is handed to the caller, who closes it (Spooled.close).
    file = tempfile.TemporaryFile()  # noqa: SIM115
    sniffer = EncodingSniffer()
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"o arquivo passa do limite de {limit} bytes")
            sniffer.feed(chunk)
            # Page-cache writes of one chunk: not worth a thread hop each.
            file.write(chunk)
    except BaseException:
        file.close()
        raise
    file.seek(0)
    return Spooled(file, sniffer.encoding, size)


def _text(spooled: Spooled) -> tuple[io.TextIOWrapper, str]:
    sample = spooled.file.read(_SAMPLE_BYTES).decode(spooled.encoding, errors="ignore")
    spooled.file.seek(0)
    # newline="": the csv module handles line breaks, including those inside quoted fields.
    return io.TextIOWrapper(spooled.file, encoding=spooled.encoding, newline=""), sample


def _take(rows: Iterator[Member | Rejected], import_id: int) -> tuple[list[ValidRow], list[ErrorRow]]:
    valid: list[ValidRow] = []
    rejected: list[ErrorRow] = []
    for row in rows:
        if isinstance(row, Member):
            valid.append((row.line, row.email, row.name, row.values))
        else:
            rejected.append((import_id, row.line, row.reason, row.content))
        if len(valid) + len(rejected) == CHUNK_ROWS:
            break
    return valid, rejected


async def import_file(conn: asyncpg.Connection, group_id: int, spooled: Spooled, filename: str) -> ImportOut:
    """Import the spooled file into the group, in the caller's transaction (which holds the
    group's lock); raises csv_reading.CsvProblem when the file cannot be read at all."""
    text, sample = _text(spooled)
    layout, rows = await asyncio.to_thread(read, text, sample)
    imports = audience_repo.ImportRepository(conn)
    import_id = await imports.start(group_id, filename, spooled.encoding, layout.delimiter)
    keys = [key for key, _ in layout.fields]
    total = invalid = imported = 0
    # The next chunk is read in its thread while PostgreSQL (its own process, the other core)
    # takes this one in; only one thread at a time ever advances the rows.
    following = asyncio.ensure_future(asyncio.to_thread(_take, rows, import_id))
    try:
        while True:
            valid, rejected = await following
            if not valid and not rejected:
                break
            following = asyncio.ensure_future(asyncio.to_thread(_take, rows, import_id))
            total += len(valid) + len(rejected)
            invalid += len(rejected)
            if valid:
                imported += await imports.add_rows(group_id, keys, valid)
            if rejected:
                await imports.copy_errors(rejected)
    finally:
        # A failed COPY must not close the file under a thread still reading it.
        await asyncio.wait([following])
    await audience_repo.GroupRepository(conn).count_members(group_id, imported, keys)
    return await imports.finish(import_id, total, imported, invalid)


def _safe(cell: str) -> str:
    return f"'{cell}" if cell.startswith(_FORMULA_STARTS) else cell


async def error_report(pool: asyncpg.Pool, done: ImportOut) -> AsyncIterator[bytes]:
    """The import's rejected lines as CSV, streamed from a cursor."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=done.delimiter, lineterminator="\r\n")
    buffer.write("\ufeff")
    writer.writerow(["linha", "motivo", "conteudo"])
    async with pool.acquire() as conn, conn.transaction():
        count = 0
        async for line, reason, content in audience_repo.ImportRepository(conn).errors(done.import_id):
            writer.writerow([line, _safe(reason), _safe(content)])
            count += 1
            if count % _REPORT_ROWS == 0:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue().encode()
