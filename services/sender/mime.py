"""MIME pieces written straight as text, for messages spliced from a precompiled skeleton.

`email.message` costs milliseconds per message (it parses back and refolds every header it is
given); these functions write the same wire format directly: CRLF line ends, header lines
folded to 78 characters where they can be, RFC 2047 encoded words for anything non-ASCII,
quoted-printable bodies with lines of at most 76 characters. Every value passes through
`one_line` first, so no name, subject or field can start a header of its own.
"""

from __future__ import annotations

import binascii
import re
import secrets
from email.message import MIMEPart
from email.policy import SMTP
from email.utils import formataddr

CRLF = "\r\n"
# RFC 5322 asks for lines of at most 78 characters (998 is the hard limit).
MAX_LINE = 78

# C0 controls, DEL and the Unicode line separators: any of them could end a header line
# somewhere (a bare CR or LF in some parser, U+2028 in Python's str.splitlines).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
# What a message can carry unquoted in the local part (RFC 5322 dot-atom) and a domain.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
# The longest word an unencoded header may hold: a longer one could not be folded to 78.
_LONGEST_PLAIN_WORD = MAX_LINE - len("Subject: ")
# RFC 2047: an encoded word is at most 75 characters long.
_MAX_ENCODED_WORD = 75
# A display name's single encoded word, kept well within the 998-character line limit.
_LONGEST_NAME_WORD = 900


def one_line(value: str) -> str:
    """The value with every run of control characters (CR and LF first) made one space."""
    return _CONTROLS.sub(" ", value).strip()


def mailbox(address: str) -> str:
    """The address as a message carries it (an IDN domain in ASCII); ValueError if it cannot."""
    if "\r" in address or "\n" in address:
        raise ValueError(f"address {address!r} contains CR or LF")
    local, at, domain = address.rpartition("@")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")  # UnicodeError is a ValueError
    if not (at and _LOCAL_PART.fullmatch(local) and _DOMAIN.fullmatch(domain)):
        # Quoted or non-ASCII local parts (SMTPUTF8) are refused: audience never accepts them.
        raise ValueError(f"{address!r} is not an address a message can carry")
    return f"{local}@{domain}"


def _needs_encoding(value: str) -> bool:
    # "=?" would be decoded as an encoded word by the reader, even inside a quoted string:
    # such a value is encoded so that it reads back exactly as written.
    return not value.isascii() or "=?" in value


def _encoded(name: str, value: str, longest_word: int = _MAX_ENCODED_WORD) -> str:
    """`value` as RFC 2047 base64 encoded words, one per folded line, each within 78 columns
    and `longest_word` characters, never cutting a UTF-8 character in two.

    email.header.Header does the same in ~170 µs for a short subject (it measures every
    candidate split); this takes a few µs, which matters at a thousand messages a second.
    """
    data = value.encode()
    words: list[str] = []
    # Bytes per word: base64 turns 3 bytes into 4 characters, the word adds 12 ("=?utf-8?b?"
    # and "?="); the first line also holds "Name: ", the next ones a folding space.
    room = min(MAX_LINE - len(name) - 2, longest_word) if longest_word <= MAX_LINE else longest_word
    start = 0
    while start < len(data):
        end = min(start + (room - 12) // 4 * 3, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            end -= 1
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode()}?=")
        start, room = end, min(MAX_LINE - 1, longest_word) if longest_word <= MAX_LINE else longest_word
    return f"{CRLF} ".join(words)


def _folded(name: str, value: str) -> str:
    """An ASCII value folded before spaces so that lines keep within 78 columns (a word longer
    than a line is never there: `unstructured` encodes such a value)."""
    lines: list[str] = []
    line = f"{name}:"
    for word in value.split(" "):
        # Fold only before a word: a folded line of nothing but a space is not allowed.
        if word and len(line) + 1 + len(word) > MAX_LINE and line.strip():
            lines.append(line)
            line = ""
        line += f" {word}"
    lines.append(line)
    return CRLF.join(lines)


def unstructured(name: str, value: str) -> str:
    """A header line (with its CRLF) such as Subject: folded at spaces, or encoded words."""
    value = one_line(value)
    if _needs_encoding(value) or max(map(len, value.split()), default=0) > _LONGEST_PLAIN_WORD:
        return f"{name}: {_encoded(name, value)}{CRLF}"
    return _folded(name, value) + CRLF


def address(name: str, display_name: str, addr_spec: str) -> str:
    """An address header line (From, To) with its CRLF; `addr_spec` already from `mailbox`."""
    display_name = one_line(display_name)
    if not display_name:
        return f"{name}: {addr_spec}{CRLF}"
    if not _needs_encoding(display_name):
        line = f"{name}: {formataddr((display_name, addr_spec))}"
        if len(line) <= MAX_LINE:
            return line + CRLF
    # Encoded words are atoms: specials inside them (":", "(", '"'...) need no quoting. One
    # word per name, even past RFC 2047's 75 characters (readers accept it): Python's parser
    # puts a space between adjacent encoded words of a phrase, which RFC 2047 says to drop,
    # so a name cut in two words would read back as "Bit tencourt".
    phrase = _encoded(name, display_name, _LONGEST_NAME_WORD)
    last_line = len(phrase.rpartition("\n")[2]) if "\n" in phrase else len(name) + 2 + len(phrase)
    gap = f"{CRLF} " if last_line + len(addr_spec) + 3 > MAX_LINE else " "
    return f"{name}: {phrase}{gap}<{addr_spec}>{CRLF}"


def quoted_printable(text: str) -> bytes:
    """UTF-8 text encoded quoted-printable, every line end CRLF (and one at the end)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    # b2a_qp writes its soft line breaks with the line end it sees first: CRLF everywhere.
    return binascii.b2a_qp(text.replace("\n", CRLF).encode(), istext=True)


def boundary() -> str:
    """A fresh multipart boundary. '=_' can occur neither in quoted-printable (where '=' is
    always followed by hex digits or a line end) nor in base64, whatever the content."""
    return f"=_{secrets.token_hex(16)}"


def text_part_head(subtype: str) -> str:
    """Headers (and the blank line) of a UTF-8 quoted-printable text part."""
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}"
    )


def multipart_head(subtype: str, boundary: str, *params: str) -> str:
    """The Content-Type header of a multipart part, without the blank line."""
    # One parameter per folded line: with the boundary, one line would pass 78 columns.
    lines = [f"Content-Type: multipart/{subtype}", f' boundary="{boundary}"', *(f" {p}" for p in params)]
    return f";{CRLF}".join(lines) + CRLF


def file_part(data: bytes, content_type: str, filename: str, content_id: str | None) -> str:
    """A base64 part for a file: inline with a Content-ID when `content_id`, else attached.

    Built once per campaign, so the standard library's careful (and slow) writer is fine here.
    """
    maintype, _, subtype = content_type.partition("/")
    if not (maintype and subtype):
        maintype, subtype = "application", "octet-stream"
    part = MIMEPart(policy=SMTP)
    part.set_content(
        data,
        maintype,
        subtype,
        disposition="inline" if content_id else "attachment",
        filename=one_line(filename),
        cid=f"<{content_id}>" if content_id else None,
    )
    return part.as_bytes().decode("ascii").removesuffix(CRLF)
