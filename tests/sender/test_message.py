"""Building one recipient's message: headers, personalisation, structure, files, CSS, tracked
links, open pixel, unsubscribe; every message is parsed back and compared."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from services.sender.content import html_to_text, inline_css, with_open_pixel
from services.sender.message import CampaignFileMissing, CompiledCampaign, build
from services.sender.transport import OutgoingMail
from shared.contracts import AttachmentRef, CampaignStarted, Recipient, SenderIdentity, headers
from shared.files import FileMissing, LocalFileStore
from shared.links import LinkSigner, TrackingLinks
from shared.personalisation import TemplateProblem
from tests.sender.examples import a_campaign, a_recipient

TRACKING_URL = "https://track.mailer.example"
SIGNER = LinkSigner("test-signing-key")
LINKS = TrackingLinks(TRACKING_URL, SIGNER)
# The headers every message carries, and no other.
EXPECTED_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    headers.CAMPAIGN_ID_HEADER.lower(),
    headers.DELIVERY_ID_HEADER.lower(),
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
}


def with_(campaign: CampaignStarted, **changes: Any) -> CampaignStarted:
    """The campaign with other values (validated, as the event would be)."""
    return CampaignStarted.model_validate({**campaign.model_dump(), **changes})


def built(campaign: CampaignStarted, recipient: Recipient) -> OutgoingMail:
    return build(CompiledCampaign.of(campaign), recipient, LINKS)


def parsed(mail: OutgoingMail) -> EmailMessage:
    message = message_from_bytes(mail.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def header_names(message: EmailMessage) -> set[str]:
    return {name.lower() for name in message}


class TestBuild:
    def test_is_multipart_alternative_with_text_then_html(self) -> None:
        message = parsed(built(a_campaign(1), a_recipient()))

        assert message.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]

    def test_envelope_is_the_sender_and_the_recipient(self) -> None:
        recipient = a_recipient(email="ana.souza@example.com")

        mail = built(a_campaign(1), recipient)

        assert (mail.envelope_from, mail.recipient) == ("news@mailer.example", "ana.souza@example.com")

    def test_from_and_to_carry_display_names(self) -> None:
        message = parsed(built(a_campaign(1), a_recipient(email="ana.souza@example.com", name="Ana Souza")))

        assert message["From"] == "Itaú Social <news@mailer.example>"
        assert message["To"] == "Ana Souza <ana.souza@example.com>"

    @pytest.mark.parametrize(
        "name",
        [
            "Itaú (Social)",
            'João "Jo" Silva',
            "Souza, Ana",
            "Conceição, João",
            "Ana <ana@evil.example>",
            "João: x@y",
            '"quoted"',
            "back\\slash (ASCII)",
            "=?utf-8?q?looks=20encoded?=",
            ("Maria da Conceição Albuquerque de Souza Bittencourt e Vasconcelos Cavalcanti " * 2).strip(),
            "Ana Beatriz dos Santos Oliveira Pereira, coordenadora do programa de formação",
        ],
    )
    def test_display_names_with_specials_round_trip(self, name: str) -> None:
        sender = SenderIdentity(name=name, email="news@mailer.example")

        message = parsed(built(a_campaign(1, sender=sender), a_recipient(email="ana@example.com", name=name)))

        assert [(a.display_name, a.addr_spec) for a in message["From"].addresses] == [
            (name, "news@mailer.example")
        ]
        assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [(name, "ana@example.com")]

    def test_a_recipient_without_a_name_gets_the_bare_address(self) -> None:
        message = parsed(built(a_campaign(1), a_recipient(email="ana@example.com", name="")))

        assert message["To"] == "ana@example.com"

    def test_subject_is_personalised(self) -> None:
        campaign = a_campaign(1, subject="{{ nome }}, sua inscrição em {{ cidade }}")

        message = parsed(built(campaign, a_recipient(name="Ana Souza", cidade="Recife")))

        assert message["Subject"] == "Ana Souza, sua inscrição em Recife"

    def test_headers_are_seven_bit_even_with_accents(self) -> None:
        mail = built(a_campaign(1, subject="Olá, {{ nome }}"), a_recipient(name="João Conceição"))

        head = mail.data.split(b"\r\n\r\n", 1)[0]
        assert head.isascii()
        assert parsed(mail)["Subject"] == "Olá, João Conceição"

    def test_lines_end_with_crlf_as_smtp_requires(self) -> None:
        data = built(a_campaign(1), a_recipient()).data

        assert data.count(b"\n") == data.count(b"\r\n") > 10

    def test_message_id_is_present_and_is_the_mails_id(self) -> None:
        mail = built(a_campaign(1), a_recipient())

        # The header is long enough to be folded: its value may start with the folding space.
        message_id = parsed(mail)["Message-ID"].strip()
        assert message_id == mail.message_id
        assert re.fullmatch(r"<[^<>@\s]+@mailer\.example>", message_id)

    def test_message_id_is_unique_per_recipient(self) -> None:
        campaign = a_campaign(1)

        ids = {built(campaign, a_recipient(recipient_id)).message_id for recipient_id in range(1, 51)}

        assert len(ids) == 50

    def test_carries_campaign_and_delivery_ids_for_feedback(self) -> None:
        message = parsed(built(a_campaign(1, campaign_id=321), a_recipient(recipient_id=7)))

        assert message[headers.CAMPAIGN_ID_HEADER] == "321"
        assert message[headers.DELIVERY_ID_HEADER] == headers.delivery_id(321, 7) == "321.7"

    def test_has_a_date(self) -> None:
        message = parsed(built(a_campaign(1), a_recipient()))

        assert message["Date"].datetime is not None

    def test_reply_to_when_the_sender_has_one(self) -> None:
        sender = SenderIdentity(
            name="Itaú Social", email="news@mailer.example", reply_to="contato@mailer.example"
        )

        message = parsed(built(a_campaign(1, sender=sender), a_recipient()))

        assert message["Reply-To"] == "contato@mailer.example"

    def test_no_reply_to_otherwise(self) -> None:
        message = parsed(built(a_campaign(1), a_recipient()))

        assert "Reply-To" not in message
        assert header_names(message) == EXPECTED_HEADERS

    def test_a_recipient_name_with_line_breaks_cannot_add_a_header(self) -> None:
        recipient = a_recipient(email="ana@example.com", name="Ana\r\nBcc: victim@example.net\r\n")

        message = parsed(built(a_campaign(1), recipient))

        assert header_names(message) == EXPECTED_HEADERS
        assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
            ("Ana Bcc: victim@example.net", "ana@example.com")
        ]

    def test_a_subject_with_line_breaks_cannot_add_a_header(self) -> None:
        campaign = a_campaign(1, subject="Oferta {{ codigo }}")
        recipient = a_recipient(codigo="X\r\nBcc: victim@example.net\nX-Evil: 1")

        message = parsed(built(campaign, recipient))

        assert header_names(message) == EXPECTED_HEADERS
        assert message["Subject"] == "Oferta X Bcc: victim@example.net X-Evil: 1"

    def test_a_sender_name_with_line_breaks_cannot_add_a_header(self) -> None:
        sender = SenderIdentity(name="Itaú\r\nBcc: victim@example.net", email="news@mailer.example")

        message = parsed(built(a_campaign(1, sender=sender), a_recipient()))

        assert header_names(message) == EXPECTED_HEADERS
        assert [(a.display_name, a.addr_spec) for a in message["From"].addresses] == [
            ("Itaú Bcc: victim@example.net", "news@mailer.example")
        ]

    def test_an_address_with_line_breaks_is_refused(self) -> None:
        recipient = a_recipient(email="ana@example.com\r\nBcc: victim@example.net")

        with pytest.raises(ValueError, match="CR or LF"):
            built(a_campaign(1), recipient)

    def test_something_that_is_no_address_is_refused(self) -> None:
        with pytest.raises(ValueError):
            built(a_campaign(1), a_recipient(email="not an address"))

    def test_html_is_personalised_and_escapes_the_name(self) -> None:
        recipient = a_recipient(name="<script>alert(1)</script>")

        html = body(parsed(built(a_campaign(1), recipient)), "html")

        assert "<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>" in html
        assert "<script>" not in html

    def test_text_part_is_derived_from_the_html_when_the_campaign_has_none(self) -> None:
        campaign = with_(
            a_campaign(
                1,
                html="<html><body><h1>Olá, {{ nome }}</h1><p>Veja <a href='https://x.example/a'>aqui</a>.</p>"
                "<p><a href='{{ link_descadastro }}'>Sair</a></p></body></html>",
            ),
            tracking="off",
        )

        text = body(parsed(built(campaign, a_recipient(name="Ana <Souza>"))), "plain")

        unsubscribe = LINKS.unsubscribe(campaign.campaign_id, 1)
        assert text == f"Olá, Ana <Souza>\n\nVeja aqui (https://x.example/a).\n\nSair ({unsubscribe})\n"

    def test_derived_text_shows_tracked_links_when_tracking_is_on(self) -> None:
        campaign = a_campaign(1, html="<p>Veja <a href='https://x.example/a'>aqui</a>.</p>")

        text = body(parsed(built(campaign, a_recipient(recipient_id=3))), "plain")

        [url] = re.findall(r"Veja aqui \((\S+)\)", text)
        assert SIGNER.verify_click(url.removeprefix(f"{TRACKING_URL}/c/")) == (
            campaign.campaign_id,
            3,
            "https://x.example/a",
        )

    def test_derived_text_is_right_even_when_the_template_cannot_be_read_as_text(self) -> None:
        # A tag inside a Jinja string: the HTML parser cuts the expression, so the text is
        # derived from each rendered HTML instead.
        campaign = a_campaign(
            1, html="<p>{{ '<b>' ~ nome ~ '</b>' }} e {% if nome %}<i>sim</i>{% endif %}</p>"
        )
        compiled = CompiledCampaign.of(campaign)

        message = parsed(build(compiled, a_recipient(name="Ana"), LINKS))

        assert compiled.text is None
        assert body(message, "plain").startswith("<b>Ana</b> e sim\n")

    def test_text_part_is_the_campaigns_own_text_when_given(self) -> None:
        campaign = a_campaign(1, text="Oi {{ nome }}, texto puro <sem escape>.")

        text = body(parsed(built(campaign, a_recipient(name="Ana & Bia"))), "plain")

        assert text.startswith("Oi Ana & Bia, texto puro <sem escape>.\n\nPara não receber mais e-mails")

    def test_open_pixel_is_inside_the_body_and_its_link_verifies(self) -> None:
        campaign = a_campaign(1, campaign_id=321)

        html = body(parsed(built(campaign, a_recipient(recipient_id=7))), "html")

        match = re.search(r'<img src="([^"]+)"[^>]*>', html)
        assert match, html
        assert html.index("<body>") < match.start() < match.end() <= html.index("</body>")
        url = match.group(1)
        assert url.startswith(f"{TRACKING_URL}/o/") and url.endswith(".gif")
        token = url.removeprefix(f"{TRACKING_URL}/o/").removesuffix(".gif")
        assert SIGNER.verify("open", token) == ["321", "7"]

    def test_open_pixel_does_not_verify_with_another_key(self) -> None:
        html = body(parsed(built(a_campaign(1), a_recipient())), "html")

        token = re.search(r"/o/([^\"]+)\.gif", html)
        assert token
        assert LinkSigner("some-other-key").verify("open", token.group(1)) is None

    def test_an_undefined_variable_in_the_html_raises_template_problem(self) -> None:
        campaign = a_campaign(1, html="<p>{{ cidade }}</p>")

        with pytest.raises(TemplateProblem, match="html: 'cidade' is undefined"):
            built(campaign, a_recipient())

    def test_an_undefined_variable_in_the_subject_raises_template_problem(self) -> None:
        campaign = a_campaign(1, subject="Olá {{ apelido }}")

        with pytest.raises(TemplateProblem, match="subject: 'apelido' is undefined"):
            built(campaign, a_recipient())

    def test_a_template_cannot_reach_python_internals(self) -> None:
        campaign = a_campaign(1, html="<p>{{ nome.__class__.__mro__ }}</p>")

        with pytest.raises(TemplateProblem):
            built(campaign, a_recipient())


class TestCompiledCampaign:
    def test_keeps_the_content(self) -> None:
        campaign = a_campaign(1)

        assert CompiledCampaign.of(campaign).content is campaign

    def test_derives_the_text_template_from_the_html_once(self) -> None:
        derived = CompiledCampaign.of(a_campaign(1))
        own = CompiledCampaign.of(a_campaign(1, text="Oi {{ nome }}"))

        assert derived.text is not None and derived.text_is_derived
        assert own.text is not None and not own.text_is_derived

    @pytest.mark.parametrize(
        ("part", "source", "problem"),
        [
            ("subject", "Olá {{ nome", "subject"),
            ("html", "<p>{% if nome %}</p>", "html"),
            ("text", "Oi {{ nome }", "text"),
        ],
    )
    def test_a_template_that_does_not_compile_raises_template_problem_naming_the_part(
        self, part: str, source: str, problem: str
    ) -> None:
        overrides: dict[str, Any] = {part: source}
        campaign = a_campaign(1, **overrides)

        with pytest.raises(TemplateProblem, match=rf"^{problem}"):
            CompiledCampaign.of(campaign)


class TestHtmlToText:
    def test_blocks_go_on_their_own_lines(self) -> None:
        text = html_to_text("<h1>Título</h1><p>Primeiro</p><div>Segundo<br>Terceiro</div>")

        assert text == "Título\n\nPrimeiro\n\nSegundo\nTerceiro\n"

    def test_links_show_their_address(self) -> None:
        assert html_to_text('<p>Veja <a href="https://x.example/a?b=1&amp;c=2">aqui</a></p>') == (
            "Veja aqui (https://x.example/a?b=1&c=2)\n"
        )

    def test_a_link_without_an_address_is_just_text(self) -> None:
        assert html_to_text("<p><a name='top'>topo</a></p>") == "topo\n"

    def test_head_style_and_script_are_dropped(self) -> None:
        page = (
            "<html><head><title>T</title><style>p {color: red}</style></head>"
            "<body><script>alert(1)</script><p>Corpo</p></body></html>"
        )

        assert html_to_text(page) == "Corpo\n"

    def test_entities_are_unescaped_and_spaces_collapsed(self) -> None:
        assert html_to_text("<p>  Ana   &amp;   Bia &lt;3  </p>") == "Ana & Bia <3\n"

    def test_no_more_than_one_blank_line_in_a_row(self) -> None:
        assert html_to_text("<p>a</p><p></p><p></p><div></div><p>b</p>") == "a\n\nb\n"


class TestWithOpenPixel:
    def test_goes_just_before_the_closing_body_tag(self) -> None:
        result = with_open_pixel("<html><body><p>x</p></body></html>", "https://t.example/o/a.gif")

        assert result == (
            '<html><body><p>x</p><img src="https://t.example/o/a.gif" width="1" height="1" alt=""'
            ' style="display:block;border:0"></body></html>'
        )

    def test_finds_the_body_tag_in_any_case_and_the_last_one(self) -> None:
        result = with_open_pixel("<BODY><p>&lt;/body&gt; </body></p></BODY >", "https://t.example/o/a.gif")

        assert result.endswith('style="display:block;border:0"></BODY >')
        assert result.count("<img") == 1

    def test_goes_at_the_end_when_there_is_no_body(self) -> None:
        result = with_open_pixel("<p>fragment</p>", "https://t.example/o/a.gif")

        assert result.startswith("<p>fragment</p><img ")

    def test_escapes_the_url(self) -> None:
        result = with_open_pixel("<p>x</p>", 'https://t.example/o/a.gif?x=1&y="2"')

        assert 'src="https://t.example/o/a.gif?x=1&amp;y=&quot;2&quot;"' in result


PDF = AttachmentRef(key="docs/edital.pdf", filename="edital de seleção.pdf", content_type="application/pdf")
LOGO = AttachmentRef(
    key="img/logo.png", filename="logo.png", content_type="image/png", inline=True, content_id="logo"
)
FILES = {
    "docs/edital.pdf": b"%PDF-1.4 " + bytes(range(256)) * 20,
    "img/logo.png": b"\x89PNG\r\n" + b"\x00" * 300,
}


def structure(part: EmailMessage) -> Any:
    """The MIME tree as nested (content type, children) / content type."""
    if part.is_multipart():
        return (part.get_content_type(), [structure(child) for child in part.iter_parts()])  # type: ignore[arg-type]
    return part.get_content_type()


def with_files(*refs: AttachmentRef, **changes: Any) -> CompiledCampaign:
    html = "<html><body><p>Olá {{ nome }}</p><img src='cid:logo'></body></html>"
    return CompiledCampaign.of(with_(a_campaign(1, html=html), attachments=list(refs), **changes), FILES)


class TestStructure:
    def test_attachments_go_in_a_mixed_part_after_the_alternative(self) -> None:
        message = parsed(build(with_files(PDF), a_recipient(), LINKS))

        assert structure(message) == (
            "multipart/mixed",
            [("multipart/alternative", ["text/plain", "text/html"]), "application/pdf"],
        )
        [attachment] = message.iter_attachments()
        assert attachment.get_filename() == "edital de seleção.pdf"
        assert attachment.get_content() == FILES["docs/edital.pdf"]

    def test_inline_images_are_related_to_the_html_by_content_id(self) -> None:
        message = parsed(build(with_files(LOGO), a_recipient(), LINKS))

        assert structure(message) == (
            "multipart/alternative",
            ["text/plain", ("multipart/related", ["text/html", "image/png"])],
        )
        [image] = [part for part in message.walk() if part.get_content_maintype() == "image"]
        assert isinstance(image, EmailMessage)
        assert image["Content-ID"] == "<logo>"
        assert image.get_content() == FILES["img/logo.png"]
        assert "cid:logo" in body(message, "html")

    def test_both_nest_related_in_alternative_in_mixed(self) -> None:
        message = parsed(build(with_files(LOGO, PDF), a_recipient(name="Ana"), LINKS))

        assert structure(message) == (
            "multipart/mixed",
            [
                ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
                "application/pdf",
            ],
        )
        assert body(message, "html").startswith("<html><body><p>Olá Ana</p>")
        assert not message.defects and all(not part.defects for part in message.walk())

    def test_an_inline_image_without_content_id_uses_its_file_name(self) -> None:
        image = AttachmentRef(key="img/logo.png", filename="logo.png", content_type="image/png", inline=True)

        message = parsed(build(with_files(image), a_recipient(), LINKS))

        assert [part["Content-ID"] for part in message.walk() if part.get_content_maintype() == "image"] == [
            "<logo.png>"
        ]

    def test_a_content_id_that_cannot_be_one_is_a_campaign_problem(self) -> None:
        image = AttachmentRef(key="img/logo.png", filename="logo.png", inline=True, content_id="a b>")

        with pytest.raises(TemplateProblem, match="Content-ID"):
            with_files(image)

    def test_a_file_missing_from_the_files_is_a_campaign_problem(self) -> None:
        missing = AttachmentRef(key="docs/none.pdf", filename="nada.pdf")

        with pytest.raises(CampaignFileMissing, match=r"'nada.pdf' \(docs/none.pdf\)"):
            with_files(missing)


class MemoryStore:
    """A file store in memory that counts reads."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.reads: list[str] = []

    async def read(self, key: str) -> bytes:
        self.reads.append(key)
        if key not in self.files:
            raise FileMissing(key)
        return self.files[key]


class TestLoad:
    async def test_reads_each_file_once_and_builds_with_them(self) -> None:
        store = MemoryStore(FILES)
        campaign = with_(a_campaign(1), attachments=[PDF, LOGO, PDF])

        compiled = await CompiledCampaign.load(campaign, store)

        assert sorted(store.reads) == ["docs/edital.pdf", "img/logo.png"]
        message = parsed(build(compiled, a_recipient(), LINKS))
        assert [part.get_content() for part in message.iter_attachments()][-1] == FILES["docs/edital.pdf"]

    async def test_a_missing_file_fails_the_campaign_naming_it(self) -> None:
        campaign = with_(a_campaign(1), attachments=[AttachmentRef(key="x/gone.pdf", filename="Edital.pdf")])

        with pytest.raises(CampaignFileMissing, match=r"Edital\.pdf"):
            await CompiledCampaign.load(campaign, MemoryStore({}))

    async def test_a_key_outside_a_local_store_fails_the_campaign_naming_that_file(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "logo.png").write_bytes(b"png")
        escaping = AttachmentRef(key="../../etc/passwd", filename="senhas.txt")
        campaign = with_(a_campaign(1), attachments=[LOGO.model_copy(update={"key": "logo.png"}), escaping])

        with pytest.raises(CampaignFileMissing, match=r"'senhas\.txt'.*outside the file store"):
            await CompiledCampaign.load(campaign, LocalFileStore(tmp_path))

    async def test_a_store_that_is_away_is_not_a_campaign_problem(self) -> None:
        class Away:
            async def read(self, key: str) -> bytes:
                raise ConnectionError("store away")

        with pytest.raises(ConnectionError):
            await CompiledCampaign.load(with_(a_campaign(1), attachments=[PDF]), Away())


STYLED = (
    "<html><head><style>p { color: red } .big { font-size: 20px }</style></head><body>"
    "<p class='big'>Olá {{ nome }}</p>"
    "<table>{% for item in itens.split(',') %}<tr><td>{{ item }}</td></tr>{% endfor %}</table>"
    "<p title='{{ nome }}'>{{ '%d' % 3 }}</p></body></html>"
)


class TestCss:
    def test_is_inlined_and_the_template_still_renders_each_row_in_the_table(self) -> None:
        campaign = with_(a_campaign(1, html=STYLED), tracking="off")

        html = body(parsed(built(campaign, a_recipient(name="Ana", itens="um,dois"))), "html")

        assert '<p class="big" style="color: red;font-size: 20px;">Olá Ana</p>' in html
        assert "<table><tr><td>um</td></tr><tr><td>dois</td></tr></table>" in html
        assert '<p title="Ana" style="color: red;">3</p>' in html
        assert "<style>" not in html

    def test_media_queries_stay_in_a_style_element(self) -> None:
        inlined = inline_css(
            "<html><head><style>@media (max-width: 600px) { p { color: blue } }</style></head><body><p>x</p></body></html>"
        )

        assert "@media (max-width: 600px)" in inlined

    def test_jinja_code_at_tag_level_keeps_the_template_as_written(self) -> None:
        source = "<style>p { color: red }</style><p {% if x %}class='a'{% endif %}>{{ nome }}</p>"

        assert inline_css(source) == source

    def test_without_a_stylesheet_the_html_is_untouched(self) -> None:
        source = "<p>Olá {{ nome }} &amp; cia</p>"

        assert inline_css(source) == source

    def test_no_stylesheet_is_fetched_from_the_network(self) -> None:
        source = "<html><head><link rel='stylesheet' href='http://127.0.0.1:9/x.css'></head><body><p>x</p></body></html>"

        assert "http://127.0.0.1:9/x.css" in inline_css(source)


LINKED = (
    "<html><body><p>Olá {{ nome }}</p>"
    "<a href='https://x.example/a?b=1&amp;c=2'>um</a>"
    '<a class="btn" href="http://x.example/curso/{{ curso }}">dois</a>'
    "<a href='mailto:contato@mailer.example'>mail</a>"
    "<a href='#topo'>topo</a>"
    "<a href='{{ link_descadastro }}'>sair</a>"
    "</body></html>"
)


def hrefs(html: str) -> list[str]:
    return [double or single for double, single in re.findall(r"""href=(?:"([^"]*)"|'([^']*)')""", html)]


class TestTrackedLinks:
    def test_web_links_become_click_links_carrying_their_destination(self) -> None:
        campaign = a_campaign(1, html=LINKED)

        html = body(parsed(built(campaign, a_recipient(recipient_id=9, curso="python 101"))), "html")

        one, two, mail, anchor, leave = hrefs(html)
        assert SIGNER.verify_click(one.removeprefix(f"{TRACKING_URL}/c/")) == (
            campaign.campaign_id,
            9,
            "https://x.example/a?b=1&c=2",
        )
        assert SIGNER.verify_click(two.removeprefix(f"{TRACKING_URL}/c/")) == (
            campaign.campaign_id,
            9,
            "http://x.example/curso/python%20101",
        )
        assert (mail, anchor) == ("mailto:contato@mailer.example", "#topo")
        assert leave == LINKS.unsubscribe(campaign.campaign_id, 9)

    def test_tracking_off_leaves_links_as_written_and_adds_no_pixel(self) -> None:
        campaign = with_(a_campaign(1, html=LINKED), tracking="off")

        html = body(parsed(built(campaign, a_recipient(recipient_id=9, curso="c"))), "html")

        assert hrefs(html)[:2] == ["https://x.example/a?b=1&amp;c=2", "http://x.example/curso/c"]
        assert "/o/" not in html and "/c/" not in html
        assert hrefs(html)[-1] == LINKS.unsubscribe(campaign.campaign_id, 9)

    def test_anonymous_tracking_counts_recipient_zero_but_unsubscribes_the_real_one(self) -> None:
        campaign = with_(a_campaign(1, html=LINKED), tracking="anonymous")

        message = parsed(built(campaign, a_recipient(recipient_id=9, curso="c")))

        html = body(message, "html")
        click = SIGNER.verify_click(hrefs(html)[0].removeprefix(f"{TRACKING_URL}/c/"))
        assert click is not None and click[1] == 0
        pixel = re.search(r"/o/([^\"]+)\.gif", html)
        assert pixel and SIGNER.verify_delivery("open", pixel.group(1)) == (campaign.campaign_id, 0)
        assert hrefs(html)[-1] == LINKS.unsubscribe(campaign.campaign_id, 9)
        assert LINKS.unsubscribe(campaign.campaign_id, 9) in message["List-Unsubscribe"]


class TestUnsubscribe:
    def test_a_template_using_link_descadastro_gets_no_footer(self) -> None:
        campaign = a_campaign(1, html="<p><a href='{{ link_descadastro }}'>Sair da lista</a></p>")

        message = parsed(built(campaign, a_recipient(recipient_id=4)))

        assert "Para não receber" not in body(message, "html")
        assert "Para não receber" not in body(message, "plain")
        assert hrefs(body(message, "html")) == [LINKS.unsubscribe(campaign.campaign_id, 4)]

    def test_other_templates_get_a_portuguese_footer_in_html_and_text(self) -> None:
        campaign = a_campaign(1)

        message = parsed(built(campaign, a_recipient(recipient_id=4)))

        link = LINKS.unsubscribe(campaign.campaign_id, 4)
        html = body(message, "html")
        assert f'Para não receber mais e-mails, <a href="{link}"' in html
        assert html.index("Para não receber") < html.index("</body>")
        assert f"Para não receber mais e-mails, descadastre-se aqui ({link})" in body(message, "plain")

    def test_list_unsubscribe_offers_https_and_mailto_with_one_click(self) -> None:
        campaign = a_campaign(1)

        message = parsed(built(campaign, a_recipient(recipient_id=4)))

        https, mailto = re.fullmatch(r"<([^>]+)>, <([^>]+)>", message["List-Unsubscribe"]).groups()  # type: ignore[union-attr]
        assert https == LINKS.unsubscribe(campaign.campaign_id, 4)
        assert mailto == LINKS.unsubscribe_mailto(campaign.campaign_id, 4, "mailer.example")
        assert mailto.endswith("@mailer.example")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    def test_the_mailto_domain_can_be_configured(self) -> None:
        links = TrackingLinks(TRACKING_URL, SIGNER, mailto_domain="descadastro.example")

        message = parsed(build(CompiledCampaign.of(a_campaign(1)), a_recipient(), links))

        assert "@descadastro.example>" in message["List-Unsubscribe"]


class TestWireFormat:
    def test_long_subjects_fold_and_read_back_exactly(self) -> None:
        subjects = [
            "Inscrições abertas para o programa de formação continuada de professores 🎉 " * 3,
            "Registration is open for the continuing education programme for teachers " * 3,
            "x" * 200,
            "Olá  dois   espaços",
        ]
        for subject in subjects:
            message = parsed(built(a_campaign(1, subject=subject), a_recipient()))
            assert message["Subject"] == subject.strip()

    def test_every_line_is_crlf_and_short(self) -> None:
        campaign = a_campaign(
            1,
            subject="Inscrições abertas para o programa de formação 🎉 " * 4,
            html="<p>" + "Uma linha muito longa, sem quebras, com acentuação e emoji 🎉. " * 50 + "</p>",
        )
        recipient = a_recipient(name="Maria da Conceição Albuquerque de Souza Bittencourt e Vasconcelos")

        data = build(with_files(PDF, LOGO).__class__.of(campaign), recipient, LINKS).data

        lines = data.split(b"\r\n")
        assert b"\n" not in b"".join(lines) and b"\r" not in b"".join(lines)
        head, _, rest = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            # Only what cannot be folded may pass 78 columns: a URL, a name's encoded word.
            assert len(line) <= 78 or b"https://" in line or b"mailto:" in line or line.startswith(b"To: "), (
                line
            )
            assert len(line) <= 998
        assert max(len(line) for line in rest.split(b"\r\n")) <= 76

    def test_a_custom_field_cannot_inject_a_header_or_a_part(self) -> None:
        campaign = a_campaign(1, subject="{{ codigo }}", html="<p>{{ codigo }}</p>", text="{{ codigo }}")
        evil = "x\r\nBcc: victim@example.net\r\n\r\n--=_boundary\r\nContent-Type: text/html\r\n\r\nhi"

        message = parsed(built(campaign, a_recipient(codigo=evil)))

        assert header_names(message) == EXPECTED_HEADERS
        assert structure(message) == ("multipart/alternative", ["text/plain", "text/html"])
        assert body(message, "plain").startswith(evil.replace("\r\n", "\n"))

    def test_message_id_is_the_same_when_a_delivery_is_built_again(self) -> None:
        campaign = a_campaign(1)
        again = with_(campaign)
        restarted = with_(campaign, event_id="00000000-0000-4000-8000-000000000000")

        first = built(campaign, a_recipient(5, email="ana@example.com"))

        assert built(again, a_recipient(5, email="ana@example.com")).message_id == first.message_id
        assert built(restarted, a_recipient(5, email="ana@example.com")).message_id != first.message_id

    def test_an_international_domain_is_written_in_ascii(self) -> None:
        mail = built(a_campaign(1), a_recipient(email="ana@educação.example"))

        assert mail.recipient == "ana@xn--educao-7ta5a.example"
        assert parsed(mail)["To"].addresses[0].domain == "xn--educao-7ta5a.example"
