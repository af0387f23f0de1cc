"""Signed link tokens: genuine ones verify, anything altered or foreign does not."""

from __future__ import annotations

import pytest

from shared.links import LinkSigner, TrackingLinks


class TestLinkSigner:
    def test_a_signed_token_verifies_with_its_values(self) -> None:
        signer = LinkSigner("k1")
        assert signer.verify("open", signer.sign("open", 12, 345)) == ["12", "345"]

    def test_a_token_of_another_kind_is_refused(self) -> None:
        signer = LinkSigner("k1")
        assert signer.verify("click", signer.sign("open", 1, 2)) is None

    def test_a_token_signed_with_an_unknown_key_is_refused(self) -> None:
        assert LinkSigner("k1").verify("open", LinkSigner("other").sign("open", 1, 2)) is None

    def test_rotation_keeps_tokens_of_the_previous_key(self) -> None:
        old_token = LinkSigner("old").sign("open", 1, 2)
        rotated = LinkSigner("new,old")
        assert rotated.verify("open", old_token) == ["1", "2"]
        assert LinkSigner("old").verify("open", rotated.sign("open", 1, 2)) is None

    @pytest.mark.parametrize("mutate", [
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t.replace(".", ""),
        lambda t: "x" + t[1:],
        lambda t: "",
        lambda t: "....",
        lambda t: "%%%.%%%",
    ])  # fmt: skip
    def test_altered_tokens_are_refused(self, mutate: object) -> None:
        signer = LinkSigner("k1")
        token = signer.sign("open", 7, 8)
        altered = mutate(token)  # type: ignore[operator]
        assert altered != token
        assert signer.verify("open", altered) is None

    @pytest.mark.parametrize("extra", range(4))
    def test_tokens_of_every_length_modulo_4_verify(self, extra: int) -> None:
        signer = LinkSigner("k1, k0")
        url = "https://example.org/" + "a" * extra

        for key in ("k1", "k0"):
            token = LinkSigner(key).sign("click", 7, 8, url)
            assert signer.verify("click", token, maxsplit=3) == ["7", "8", url]

    @pytest.mark.parametrize("token", ["b3Blbjo3Ojg.é", "ö.AAAA", "b3Blbjo3Ojg\u00e9.x"])
    def test_a_token_with_a_character_no_token_holds_is_refused(self, token: str) -> None:
        assert LinkSigner("k1").verify("open", token) is None

    def test_changing_a_value_breaks_the_signature(self) -> None:
        signer = LinkSigner("k1")
        payload, mac = signer.sign("open", 7, 8).split(".")
        forged_payload = signer.sign("open", 7, 9).split(".")[0]
        assert signer.verify("open", f"{forged_payload}.{mac}") is None
        assert payload != forged_payload

    def test_needs_a_key(self) -> None:
        with pytest.raises(ValueError, match="no key"):
            LinkSigner(" , ")


class TestTrackingLinks:
    def test_open_pixel_url_is_under_the_base_url_and_verifies(self) -> None:
        signer = LinkSigner("k1")
        url = TrackingLinks("https://t.example/", signer).open_pixel(3, 4)
        assert url.startswith("https://t.example/o/") and url.endswith(".gif")
        token = url.removeprefix("https://t.example/o/").removesuffix(".gif")
        assert signer.verify("open", token) == ["3", "4"]


class TestClickTokens:
    URL = "https://www.example.org:8443/a/b?x=1&y=a:b#frag"

    def test_a_click_token_verifies_with_its_delivery_and_whole_url(self) -> None:
        signer = LinkSigner("k1")
        assert signer.verify_click(signer.sign("click", 12, 345, self.URL)) == (12, 345, self.URL)

    def test_another_destination_under_the_same_mac_is_refused(self) -> None:
        signer = LinkSigner("k1")
        _, mac = signer.sign("click", 1, 2, self.URL).split(".")
        other_payload = signer.sign("click", 1, 2, "https://evil.example/").split(".")[0]
        assert signer.verify_click(f"{other_payload}.{mac}") is None

    def test_a_click_token_of_the_previous_key_still_verifies(self) -> None:
        token = LinkSigner("old").sign("click", 1, 2, self.URL)
        assert LinkSigner("new,old").verify_click(token) == (1, 2, self.URL)

    @pytest.mark.parametrize(
        "values",
        [
            (1, 2, "javascript:alert(1)"),
            (1, 2, "//evil.example/"),
            (1, 2, "https://x.example/a b"),
            (1, 2, "https://x.example/\r\nSet-Cookie: a=b"),
            (1, "²", "https://x.example/"),
            ("a", 2, "https://x.example/"),
            (1, 2),
        ],
    )
    def test_anything_but_ids_and_a_web_address_is_refused(self, values: tuple[object, ...]) -> None:
        signer = LinkSigner("k1")
        assert signer.verify_click(signer.sign("click", *values)) is None  # type: ignore[arg-type]

    def test_an_open_token_is_no_click_token(self) -> None:
        signer = LinkSigner("k1")
        assert signer.verify_click(signer.sign("open", 1, 2)) is None


class TestVerifyDelivery:
    def test_returns_the_ids_as_integers(self) -> None:
        signer = LinkSigner("k1")
        assert signer.verify_delivery("u", signer.sign("u", 7, 0)) == (7, 0)

    @pytest.mark.parametrize("values", [(1,), (1, 2, 3), (1, "²"), (-1, 2), (1, "a")])
    def test_refuses_other_shapes(self, values: tuple[object, ...]) -> None:
        signer = LinkSigner("k1")
        assert signer.verify_delivery("open", signer.sign("open", *values)) is None  # type: ignore[arg-type]

    def test_refuses_another_kind(self) -> None:
        signer = LinkSigner("k1")
        assert signer.verify_delivery("u", signer.sign("open", 1, 2)) is None


class TestTrackingLinksForClicksAndUnsubscribe:
    signer = LinkSigner("k1")
    links = TrackingLinks("https://t.example/", signer, mailto_domain="unsub.example")

    def test_click_url_carries_a_token_for_the_destination(self) -> None:
        url = self.links.click(3, 4, "https://x.example/p?q=1")
        assert url.startswith("https://t.example/c/")
        assert self.signer.verify_click(url.removeprefix("https://t.example/c/")) == (
            3,
            4,
            "https://x.example/p?q=1",
        )

    def test_unsubscribe_url_is_under_u_and_verifies(self) -> None:
        url = self.links.unsubscribe(3, 4)
        assert url.startswith("https://t.example/u/")
        assert self.signer.verify_delivery("u", url.removeprefix("https://t.example/u/")) == (3, 4)

    def test_mailto_uses_the_configured_domain_and_the_same_token(self) -> None:
        mailto = self.links.unsubscribe_mailto(3, 4, "sender.example")
        assert mailto.startswith("mailto:unsubscribe+") and mailto.endswith("@unsub.example")
        token = mailto.removeprefix("mailto:unsubscribe+").removesuffix("@unsub.example")
        assert self.signer.verify_delivery("u", token) == (3, 4)

    def test_mailto_falls_back_to_the_senders_domain(self) -> None:
        mailto = TrackingLinks("https://t.example", self.signer).unsubscribe_mailto(3, 4, "sender.example")
        assert mailto.endswith("@sender.example")

    def test_mailto_local_part_fits_in_64_octets_for_large_ids(self) -> None:
        mailto = self.links.unsubscribe_mailto(9_999_999_999, 99_999_999, "sender.example")
        local_part = mailto.removeprefix("mailto:").split("@")[0]
        assert len(local_part) <= 64, local_part
