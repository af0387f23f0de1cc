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
