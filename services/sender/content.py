"""What a campaign's HTML template becomes before it is compiled, once per campaign.

CSS is inlined (mail clients drop <style>), web links are rewritten to a template variable
holding the recipient's tracked link, the unsubscribe footer and the open pixel are added, and
a text version is derived. All of it works on the template source, so that per recipient only
the compiled templates run.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import quote

import css_inline

# Template variables that `build` fills per recipient, beside the recipient's own.
LINKS_VARIABLE = "_mailer_links"
PIXEL_VARIABLE = "_mailer_pixel"

UNSUBSCRIBE_FOOTER_HTML = (
    '<p style="font-size:12px;line-height:18px;color:#666666;text-align:center;margin:24px 0 0">'
    'Para não receber mais e-mails, <a href="{{ link_descadastro }}" style="color:#666666">'
    "descadastre-se aqui</a>.</p>"
)
UNSUBSCRIBE_FOOTER_TEXT = "\n\nPara não receber mais e-mails, descadastre-se aqui: {{ link_descadastro }}\n"

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
# Placeholders for Jinja code while the inliner parses the HTML: a comment in text (a comment
# stays where it is, where text inside a <table> would be moved out of it), a plain word inside
# a tag. <title> escapes the comment, and the parser lowercases attribute names: both seen below.
_PLACEHOLDER = re.compile(r"<!--mailer-jinja:(\d+)-->|&lt;!--mailer-jinja:(\d+)--&gt;|MAILERJINJA(\d+)X")
_STYLESHEET = re.compile(r"<style|<link", re.IGNORECASE)
_TBODY = re.compile(r"</?tbody\b[^>]*>", re.IGNORECASE)
_INLINER = css_inline.CSSInliner(
    # Never fetch a stylesheet from the network while compiling; @media rules cannot be
    # inlined, so they stay in a <style> for the clients that read it.
    load_remote_stylesheets=False,
    keep_link_tags=True,
    keep_at_rules=True,
)


def _protect(source: str) -> tuple[str, list[str]]:
    """The source with its Jinja code replaced by placeholders, and that code in order."""
    code: list[str] = []
    out: list[str] = []
    position = 0
    in_tag = False
    for match in _JINJA.finditer(source):
        text = source[position : match.start()]
        opened, closed = text.rfind("<"), text.rfind(">")
        if opened != closed:  # equal only when neither is there: still where we were
            in_tag = opened > closed
        out.append(text)
        out.append(f"MAILERJINJA{len(code)}X" if in_tag else f"<!--mailer-jinja:{len(code)}-->")
        code.append(match.group())
        position = match.end()
    out.append(source[position:])
    return "".join(out), code


def inline_css(source: str) -> str:
    """The HTML template with its CSS in style attributes, its Jinja code left intact.

    When the inliner would move or duplicate template code (a placeholder inside a stylesheet,
    a tag-level {% if %}), the template is kept as written rather than changed in meaning.
    """
    if not _STYLESHEET.search(source):
        return source
    protected, code = _protect(source)
    try:
        inlined = _INLINER.inline(protected)
    except css_inline.InlineError:
        return source
    found = [int(next(group for group in m.groups() if group)) for m in _PLACEHOLDER.finditer(inlined)]
    if found != list(range(len(code))):
        return source
    if not _TBODY.search(source):
        # The HTML parser adds a <tbody> to every table; after a {% for %} that repeats rows
        # it would open one per row and close one.
        inlined = _TBODY.sub("", inlined)
    return _PLACEHOLDER.sub(lambda m: code[int(next(group for group in m.groups() if group))], inlined)


# An <a> tag's href; the value is group 3 (quoted) and the quote is group 2.
_ANCHOR_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_WEB_URL = re.compile(r"\s*https?://", re.IGNORECASE)
# What a URL may hold as it is; the rest is percent-encoded, as a browser does (no space or
# control character can then reach the tracking service's Location header).
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


def clean_url(url: str) -> str:
    """The URL with surrounding space removed and unsafe characters percent-encoded."""
    return quote(url.strip(), safe=_URL_SAFE)


@dataclass(frozen=True)
class TrackedHtml:
    """An HTML template whose web links read `LINKS_VARIABLE[i]`; `urls[i]` is the source of
    link i's destination (HTML entities decoded, possibly with Jinja code of its own)."""

    html: str
    urls: list[str]


def track_links(source: str) -> TrackedHtml:
    """Rewrite every http(s) href of an <a> to its tracked link (mailto:, #anchors and
    template-made links such as the unsubscribe link are left alone)."""
    urls: list[str] = []

    def rewrite(match: re.Match[str]) -> str:
        prefix, quote_mark, value = match.groups()
        if not _WEB_URL.match(value):
            return match.group()
        urls.append(html_lib.unescape(value).strip())
        return f"{prefix}{quote_mark}{{{{ {LINKS_VARIABLE}[{len(urls) - 1}] }}}}{quote_mark}"

    return TrackedHtml(_ANCHOR_HREF.sub(rewrite, source), urls)


_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def before_body_end(html_body: str, fragment: str) -> str:
    """The body with `fragment` as its last element (inside <body> when there is one)."""
    ends = [m.start() for m in _BODY_END.finditer(html_body)]
    if not ends:
        return html_body + fragment
    return html_body[: ends[-1]] + fragment + html_body[ends[-1] :]


def with_open_pixel(html_body: str, pixel_url: str) -> str:
    """The body with the open pixel as its last element (inside <body> when there is one)."""
    pixel = (
        f'<img src="{html_lib.escape(pixel_url)}" width="1" height="1" alt="" style="display:block;border:0">'
    )
    return before_body_end(html_body, pixel)


class _TextExtractor(HTMLParser):
    """Plain text of an HTML body: text kept, blocks on their own lines, links shown."""

    _BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"style", "script", "head"}:
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"style", "script", "head"}:
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def tidy_text(text: str) -> str:
    """No more than one blank line in a row."""
    # str.replace, not re.sub(r"\n{3,}"): the regex costs ~45 µs on a 4 KB text, this ~2 µs.
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def text_template(html_template: str) -> str | None:
    """The text version of an HTML template, itself a template; None when Jinja code holds
    '<' or '&', which the HTML parser would take for a tag or an entity and change."""
    if any("<" in code or "&" in code for code in _JINJA.findall(html_template)):
        return None
    return html_to_text(html_template)


def html_to_text(body: str) -> str:
    """A readable text alternative of an HTML body."""
    extractor = _TextExtractor()
    extractor.feed(body)
    text = html_lib.unescape("".join(extractor.parts))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return tidy_text("\n".join(lines)).strip() + "\n"
