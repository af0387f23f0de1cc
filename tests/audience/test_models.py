"""What the audience API accepts: addresses checked and normalised, nothing unexpected let in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.audience.models import GroupIn, MemberIn, normalise_email


class TestNormaliseEmail:
    @pytest.mark.parametrize(
        ("given", "stored"),
        [
            ("ana.souza@example.com", "ana.souza@example.com"),
            ("Ana.Souza@EXAMPLE.COM", "Ana.Souza@example.com"),
            ("  bruno@Example.Net \n", "bruno@example.net"),
            ("carla+news@sub.Example.ORG", "carla+news@sub.example.org"),
            ("joão@exemplo.com.br", "joão@exemplo.com.br"),
        ],
    )
    def test_a_valid_address_keeps_its_local_part_and_gets_a_lower_case_domain(
        self, given: str, stored: str
    ) -> None:
        assert normalise_email(given) == stored

    @pytest.mark.parametrize(
        "given",
        [
            "",
            "   ",
            "no-at-sign.example.com",
            "two@@example.com",
            "a@b",
            "with space@example.com",
            "@example.com",
            "ana@",
        ],
    )
    def test_an_invalid_address_raises_value_error_saying_so(self, given: str) -> None:
        # The reason from the validator follows the prefix, so a 422 tells the user what is wrong.
        with pytest.raises(ValueError, match=r"^invalid e-mail address: \S"):
            normalise_email(given)


class TestMemberIn:
    def test_email_is_normalised_and_the_rest_defaults_to_empty(self) -> None:
        member = MemberIn.model_validate({"email": " Ana@EXAMPLE.com "})

        assert (member.email, member.name, member.fields) == ("Ana@example.com", "", {})

    def test_name_is_stripped_and_fields_kept(self) -> None:
        member = MemberIn.model_validate(
            {"email": "ana@example.com", "name": "  Ana Souza ", "fields": {"cidade": "Recife"}}
        )

        assert (member.name, member.fields) == ("Ana Souza", {"cidade": "Recife"})

    def test_an_invalid_email_is_reported_on_the_email_field(self) -> None:
        with pytest.raises(ValidationError) as caught:
            MemberIn.model_validate({"email": "not-an-address"})

        [error] = caught.value.errors()
        assert error["loc"] == ("email",)
        assert "invalid e-mail address" in error["msg"]

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"email": "ana@example.com", "phone": "123"}, ("phone",)),
            ({"email": "ana@example.com", "fields": {"age": 30}}, ("fields", "age")),
            ({"email": "ana@example.com", "name": "x" * 301}, ("name",)),
            ({"email": "a" * 310 + "@example.com"}, ("email",)),
            ({"email": "ana@example.com", "fields": {f"f{i}": "v" for i in range(51)}}, ("fields",)),
            ({"name": "no address"}, ("email",)),
        ],
    )
    def test_unknown_fields_wrong_types_and_oversized_values_are_refused(
        self, body: dict[str, object], loc: tuple[str, ...]
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            MemberIn.model_validate(body)

        assert [e["loc"] for e in caught.value.errors()] == [loc]


class TestGroupIn:
    def test_members_default_to_none_and_the_name_is_stripped(self) -> None:
        group = GroupIn.model_validate({"name": "  Equipe  "})

        assert (group.name, group.members) == ("Equipe", [])

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"name": "   "}, ("name",)),
            ({"name": "x" * 201}, ("name",)),
            ({"name": "Equipe", "kind": "mailing"}, ("kind",)),
            (
                {"name": "Equipe", "members": [{"email": "ana@example.com"}, {"email": "bad"}]},
                ("members", 1, "email"),
            ),
        ],
    )
    def test_a_bad_group_is_refused_where_it_is_wrong(
        self, body: dict[str, object], loc: tuple[object, ...]
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            GroupIn.model_validate(body)

        assert [e["loc"] for e in caught.value.errors()] == [loc]

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"name": "Equipe", "kind": "remote"}, "um grupo remoto precisa de url"),
            ({"name": "Equipe", "url": "https://example.com/g?token=1"}, "só um grupo remoto tem url"),
            (
                {"name": "Equipe", "kind": "csv", "members": [{"email": "ana@example.com"}]},
                "só um grupo estático recebe membros na criação",
            ),
        ],
    )
    def test_what_a_kind_needs_is_checked(self, body: dict[str, object], message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            GroupIn.model_validate(body)

    def test_a_remote_group_keeps_its_url(self) -> None:
        group = GroupIn.model_validate(
            {"name": "Polo", "kind": "remote", "url": "https://example.com/g?token=1"}
        )

        assert (group.kind, group.url, group.members) == ("remote", "https://example.com/g?token=1", [])
