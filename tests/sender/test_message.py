"""Building one recipient's message: headers, personalisation, the open pixel, the text part."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from services.sender.message import CompiledCampaign, build, html_to_text, with_open_pixel
from services.sender.transport import OutgoingMail
from shared.contracts import CampaignStarted, Recipient, SenderIdentity, headers
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
}


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
        ["Itaú (Social)", 'João "Jo" Silva', "Souza, Ana", "Conceição, João", "Ana <ana@evil.example>"],
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
        campaign = a_campaign(
            1,
            html="<html><body><h1>Olá, {{ nome }}</h1><p>Veja <a href='https://x.example/a'>aqui</a>.</p></body></html>",
        )

        text = body(parsed(built(campaign, a_recipient(name="Ana <Souza>"))), "plain")

        assert text == "Olá, Ana <Souza>\n\nVeja aqui (https://x.example/a).\n"

    def test_text_part_is_the_campaigns_own_text_when_given(self) -> None:
        campaign = a_campaign(1, text="Oi {{ nome }}, texto puro <sem escape>.")

        text = body(parsed(built(campaign, a_recipient(name="Ana & Bia"))), "plain")

        assert text.strip() == "Oi Ana & Bia, texto puro <sem escape>."

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

    def test_compiles_the_text_only_when_there_is_one(self) -> None:
        assert CompiledCampaign.of(a_campaign(1)).text is None
        assert CompiledCampaign.of(a_campaign(1, text="Oi {{ nome }}")).text is not None

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
