"""Builds the MIME message for one recipient of a campaign, from a skeleton compiled once.

`CompiledCampaign.of` does, once per campaign, everything that is the same for every
recipient: CSS inlined, links rewritten for tracking, unsubscribe footer and open pixel added,
templates compiled, static headers written, boundaries chosen, files base64-encoded. `build`
then renders the templates and splices the personal parts into those bytes: To, Subject, Date,
Message-ID, X-Mailer-Delivery, List-Unsubscribe and the two quoted-printable bodies. Building
an `email.message.EmailMessage` per recipient instead costs 10-20 times as much.

Structure: multipart/alternative (text, then HTML). With inline images, the HTML is a
multipart/related holding them; with attachments, a multipart/mixed holds everything.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate

from jinja2 import Template, TemplateError

from services.sender import content as html_content
from services.sender import mime
from services.sender.mime import CRLF
from services.sender.transport import OutgoingMail
from shared.contracts import AttachmentRef, CampaignStarted, Recipient, headers
from shared.files import FileMissing, FileStore
from shared.links import ANONYMOUS, TrackingLinks
from shared.personalisation import (
    UNSUBSCRIBE_VARIABLE,
    TemplateProblem,
    compile_html,
    compile_plain,
    referenced_variables,
    render,
)

# What a Content-ID may hold between its angle brackets (RFC 5322 msg-id characters).
_CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")


class CampaignFileMissing(TemplateProblem):
    """A file the campaign sends cannot be read from the file store: no message can be built."""


@dataclass(frozen=True)
class Skeleton:
    """The campaign's message around its personal parts: `head` follows the personal headers
    (through the blank line), then the text body goes between `before_text` and `between`, and
    the HTML body between `between` and `after_html`."""

    head: str
    before_text: bytes
    between: bytes
    after_html: bytes


@dataclass(frozen=True)
class CompiledCampaign:
    """A campaign's content, compiled once: templates, tracked links and MIME skeleton.

    `text` is None when the text version could not be derived from the HTML template itself;
    it is then derived from each rendered HTML (correct, but slower). `links[i]` is the
    destination of tracked link i: a URL, or a template when the href has Jinja code.
    """

    content: CampaignStarted
    subject: Template
    html: Template
    text: Template | None
    text_is_derived: bool
    links: tuple[str | Template, ...]
    envelope_from: str
    domain: str
    from_header: str
    subject_header: str | None
    skeleton: Skeleton

    @classmethod
    def of(cls, content: CampaignStarted, files: Mapping[str, bytes] | None = None) -> CompiledCampaign:
        """Compile the content with its files' bytes by key; raises TemplateProblem (a
        CampaignFileMissing when a file is not in `files`)."""
        subject = compile_plain(content.subject, "subject")
        # Compiled as written first, so that an error names the author's own line numbers.
        compile_html(content.html)
        prepared = _prepared_html(content)
        text = _with_text_footer(content.text) if content.text else _derived_text(prepared.html)
        try:
            sender = mime.mailbox(content.sender.email)
            reply_to = mime.mailbox(content.sender.reply_to) if content.sender.reply_to else None
        except ValueError as exc:
            raise TemplateProblem(f"sender: {exc}") from exc
        return cls(
            content=content,
            subject=subject,
            html=compile_html(prepared.html),
            text=text,
            text_is_derived=not content.text,
            links=tuple(_destination_template(url) for url in prepared.urls),
            envelope_from=sender,
            domain=sender.rpartition("@")[2],
            from_header=mime.address("From", content.sender.name, sender),
            subject_header=_static_subject(content.subject, subject),
            skeleton=_skeleton(content, reply_to, files or {}),
        )

    @classmethod
    async def load(cls, content: CampaignStarted, store: FileStore) -> CompiledCampaign:
        """Read the campaign's files from the store (once each), then compile; raises
        TemplateProblem, or the store's own error when it is unreachable (worth a retry)."""
        refs = {ref.key: ref for ref in content.attachments}
        data = await asyncio.gather(*(_read(store, ref) for ref in refs.values()))
        return cls.of(content, dict(zip(refs, data, strict=True)))


def _missing(ref: AttachmentRef, why: str) -> CampaignFileMissing:
    return CampaignFileMissing(f"attachment {ref.filename!r} ({ref.key}): {why}")


async def _read(store: FileStore, ref: AttachmentRef) -> bytes:
    try:
        return await store.read(ref.key)
    except (FileMissing, ValueError) as exc:  # ValueError: a key the store refuses
        raise _missing(ref, str(exc)) from exc


def _prepared_html(content: CampaignStarted) -> html_content.TrackedHtml:
    source = html_content.inline_css(content.html)
    if UNSUBSCRIBE_VARIABLE not in referenced_variables(source):
        source = html_content.before_body_end(source, html_content.UNSUBSCRIBE_FOOTER_HTML)
    if content.tracking == "off":
        return html_content.TrackedHtml(source, [])
    tracked = html_content.track_links(source)
    pixel = f"{{{{ {html_content.PIXEL_VARIABLE} }}}}"
    return html_content.TrackedHtml(html_content.with_open_pixel(tracked.html, pixel), tracked.urls)


def _with_text_footer(source: str) -> Template:
    template = compile_plain(source, "text")  # first, so that an error names the text
    if UNSUBSCRIBE_VARIABLE in referenced_variables(source):
        return template
    return compile_plain(source.rstrip("\n") + html_content.UNSUBSCRIBE_FOOTER_TEXT, "text")


def _derived_text(prepared_html: str) -> Template | None:
    # The text of the HTML *template* is a text template: rendering it gives the text of the
    # rendered HTML, without parsing HTML per recipient. When the HTML parser would cut Jinja
    # code (a tag inside a string, a {% if %} opened in <head> and closed in <body>), the
    # text is derived from each rendered HTML instead.
    source = html_content.text_template(prepared_html)
    if source is None:
        return None
    try:
        return compile_plain(source, "text")
    except TemplateProblem:
        return None


def _destination_template(url: str) -> str | Template:
    if "{{" in url or "{%" in url:
        return compile_plain(url, "link")
    return html_content.clean_url(url)


def _static_subject(source: str, subject: Template) -> str | None:
    """The Subject header line when the subject reads no variable (written once), else None."""
    if referenced_variables(source):
        return None
    try:
        return mime.unstructured("Subject", subject.render())
    except TemplateError as exc:
        raise TemplateProblem(f"subject: {exc.message or exc}") from exc


def _file_part(ref: AttachmentRef, files: Mapping[str, bytes]) -> str:
    data = files.get(ref.key)
    if data is None:
        raise _missing(ref, "not in the file store")
    content_id = (ref.content_id or ref.filename) if ref.inline else None
    if content_id is not None and not _CONTENT_ID.fullmatch(content_id):
        raise TemplateProblem(f"inline image {ref.filename!r}: {content_id!r} cannot be a Content-ID")
    return mime.file_part(data, ref.content_type, ref.filename, content_id)


def _skeleton(content: CampaignStarted, reply_to: str | None, files: Mapping[str, bytes]) -> Skeleton:
    inline = [_file_part(ref, files) for ref in content.attachments if ref.inline]
    attached = [_file_part(ref, files) for ref in content.attachments if not ref.inline]
    alternative = mime.boundary()
    before_text = f"--{alternative}{CRLF}{mime.text_part_head('plain')}"
    between = f"{CRLF}--{alternative}{CRLF}"
    after_html = ""
    if inline:
        related = mime.boundary()
        related_head = mime.multipart_head("related", related, 'type="text/html"')
        between += f"{related_head}{CRLF}--{related}{CRLF}"
        after_html = "".join(f"{CRLF}--{related}{CRLF}{part}" for part in inline) + f"{CRLF}--{related}--"
    between += mime.text_part_head("html")
    after_html += f"{CRLF}--{alternative}--"
    top = mime.multipart_head("alternative", alternative)
    if attached:
        mixed = mime.boundary()
        before_text = f"--{mixed}{CRLF}{top}{CRLF}{before_text}"
        after_html += "".join(f"{CRLF}--{mixed}{CRLF}{part}" for part in attached) + f"{CRLF}--{mixed}--"
        top = mime.multipart_head("mixed", mixed)
    head = "".join(
        (
            mime.address("Reply-To", "", reply_to) if reply_to else "",
            f"{headers.CAMPAIGN_ID_HEADER}: {content.campaign_id}{CRLF}",
            f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}",
            f"MIME-Version: 1.0{CRLF}",
            top,
            CRLF,
        )
    )
    return Skeleton(head, before_text.encode(), between.encode(), f"{after_html}{CRLF}".encode())


_date: tuple[int, str] = (0, "")


def _date_header() -> str:
    """The Date header line of a message sent now; written once a second, not per message."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, f"Date: {formatdate(now, usegmt=True)}{CRLF}")
    return _date[1]


def _destination(link: str | Template, recipient: Recipient) -> str:
    return link if isinstance(link, str) else html_content.clean_url(render(link, recipient, "link"))


def build(campaign: CompiledCampaign, recipient: Recipient, links: TrackingLinks) -> OutgoingMail:
    """The message to `recipient`; raises TemplateProblem if a template cannot be rendered and
    ValueError if the recipient's address cannot be carried by a message."""
    content = campaign.content
    to = mime.mailbox(recipient.email)
    campaign_id, recipient_id = content.campaign_id, recipient.recipient_id
    unsubscribe = links.unsubscribe(campaign_id, recipient_id)
    extra: dict[str, object] = {UNSUBSCRIBE_VARIABLE: unsubscribe}
    if content.tracking != "off":
        tracked_id = ANONYMOUS if content.tracking == "anonymous" else recipient_id
        extra[html_content.PIXEL_VARIABLE] = links.open_pixel(campaign_id, tracked_id)
        extra[html_content.LINKS_VARIABLE] = [
            links.click(campaign_id, tracked_id, _destination(link, recipient)) for link in campaign.links
        ]
    html = render(campaign.html, recipient, "html", extra)
    if campaign.text is None:
        text = html_content.html_to_text(html)
    else:
        text = render(campaign.text, recipient, "text", extra)
        if campaign.text_is_derived:
            text = html_content.tidy_text(text)
    delivery = headers.delivery_id(campaign_id, recipient_id)
    # Deterministic per delivery and unique per campaign start (its event id): a resent
    # delivery keeps its Message-ID, so a mailbox that already has it can drop the copy.
    message_id = f"<{delivery}.{content.event_id.hex[:12]}@{campaign.domain}>"
    mailto = links.unsubscribe_mailto(campaign_id, recipient_id, campaign.domain)
    head = "".join(
        (
            campaign.from_header,
            mime.address("To", recipient.name, to),
            campaign.subject_header
            or mime.unstructured("Subject", render(campaign.subject, recipient, "subject")),
            _date_header(),
            f"Message-ID: {message_id}{CRLF}",
            f"{headers.DELIVERY_ID_HEADER}: {delivery}{CRLF}",
            f"List-Unsubscribe: <{unsubscribe}>,{CRLF} <{mailto}>{CRLF}",
            campaign.skeleton.head,
        )
    )
    skeleton = campaign.skeleton
    data = b"".join(
        (
            head.encode("ascii"),
            skeleton.before_text,
            mime.quoted_printable(text),
            skeleton.between,
            mime.quoted_printable(html),
            skeleton.after_html,
        )
    )
    return OutgoingMail(envelope_from=campaign.envelope_from, recipient=to, data=data, message_id=message_id)
