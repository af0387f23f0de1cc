"""Builds the MIME message for one recipient of a campaign.

Templates are compiled once per campaign (`CompiledCampaign`), rendered per recipient. Header
values are single lines: a name or subject carrying CR/LF is flattened, never a new header.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html.parser import HTMLParser

from jinja2 import Template

from services.sender.transport import OutgoingMail
from shared.contracts import CampaignStarted, Recipient, headers
from shared.links import TrackingLinks
from shared.personalisation import compile_html, compile_plain, render

_LINE_BREAKS = re.compile(r"[\r\n]+")


def _one_line(value: str) -> str:
    return _LINE_BREAKS.sub(" ", value).strip()


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


def html_to_text(body: str) -> str:
    """A readable text alternative of an HTML body."""
    extractor = _TextExtractor()
    extractor.feed(body)
    text = html_lib.unescape("".join(extractor.parts))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


@dataclass(frozen=True)
class CompiledCampaign:
    """A campaign's content, its templates compiled once."""

    content: CampaignStarted
    subject: Template
    html: Template
    text: Template | None

    @classmethod
    def of(cls, content: CampaignStarted) -> CompiledCampaign:
        """Compile the content's templates; raises TemplateProblem."""
        text = compile_plain(content.text, "text") if content.text else None
        return cls(content, compile_plain(content.subject, "subject"), compile_html(content.html), text)


_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def with_open_pixel(html_body: str, pixel_url: str) -> str:
    """The body with the open pixel as its last element (inside <body> when there is one)."""
    pixel = (
        f'<img src="{html_lib.escape(pixel_url)}" width="1" height="1" alt="" style="display:block;border:0">'
    )
    ends = [m.start() for m in _BODY_END.finditer(html_body)]
    if not ends:
        return html_body + pixel
    return html_body[: ends[-1]] + pixel + html_body[ends[-1] :]


def build(campaign: CompiledCampaign, recipient: Recipient, links: TrackingLinks) -> OutgoingMail:
    """The message to `recipient`; raises TemplateProblem if a template cannot be rendered."""
    content = campaign.content
    html_body = render(campaign.html, recipient, "html")
    text_body = render(campaign.text, recipient, "text") if campaign.text else html_to_text(html_body)
    html_body = with_open_pixel(html_body, links.open_pixel(content.campaign_id, recipient.recipient_id))
    domain = content.sender.email.rsplit("@", 1)[1]
    delivery = headers.delivery_id(content.campaign_id, recipient.recipient_id)
    message_id = make_msgid(idstring=delivery, domain=domain)

    msg = EmailMessage(policy=policy.SMTP)
    # Address objects, not formataddr() strings: the policy re-parses and refolds a string, and
    # a non-ASCII name with specials ("Itaú (Social)", "João: x@y") came out as a comment or a group.
    msg["From"] = Address(_one_line(content.sender.name), addr_spec=content.sender.email)
    msg["To"] = Address(_one_line(recipient.name), addr_spec=recipient.email)
    msg["Subject"] = _one_line(render(campaign.subject, recipient, "subject"))
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    if content.sender.reply_to:
        msg["Reply-To"] = content.sender.reply_to
    msg[headers.CAMPAIGN_ID_HEADER] = str(content.campaign_id)
    msg[headers.DELIVERY_ID_HEADER] = delivery
    msg.set_content(text_body)
    msg.add_alternative(html_body, subtype="html")
    return OutgoingMail(
        envelope_from=content.sender.email,
        recipient=recipient.email,
        data=msg.as_bytes(),
        message_id=message_id,
    )
