"""The personalisation language: sandboxed, strict, escaped in HTML."""

from __future__ import annotations

import pytest

from shared.contracts import Recipient
from shared.personalisation import TemplateProblem, compile_html, compile_plain, referenced_variables, render

ANA = Recipient(recipient_id=1, email="ana@example.com", name="Ana <Souza>", fields={"cidade": "Recife"})


class TestRender:
    def test_name_email_and_custom_fields(self) -> None:
        template = compile_plain("{{ nome }} / {{ name }} / {{ email }} / {{ cidade }}", "subject")
        assert render(template, ANA, "subject") == "Ana <Souza> / Ana <Souza> / ana@example.com / Recife"

    def test_html_escapes_values(self) -> None:
        assert render(compile_html("<p>{{ nome }}</p>"), ANA, "html") == "<p>Ana &lt;Souza&gt;</p>"

    def test_an_undefined_variable_is_an_error_naming_it(self) -> None:
        with pytest.raises(TemplateProblem, match="sobrenome"):
            render(compile_plain("{{ sobrenome }}", "subject"), ANA, "subject")

    def test_the_sandbox_refuses_attribute_escapes(self) -> None:
        template = compile_plain("{{ ''.__class__.__mro__[1].__subclasses__() }}", "text")
        with pytest.raises(TemplateProblem):
            render(template, ANA, "text")


class TestCompile:
    def test_a_syntax_error_names_the_part_and_line(self) -> None:
        with pytest.raises(TemplateProblem, match=r"html \(line 2\)"):
            compile_html("<p>ok</p>\n{% if nome %}")


class TestReferencedVariables:
    def test_lists_what_the_templates_read_across_sources(self) -> None:
        found = referenced_variables("Olá {{ nome }}", "<p>{{ curso }} em {{ cidade|upper }}</p>")
        assert found == {"nome", "curso", "cidade"}

    def test_variables_set_inside_the_template_are_not_reported(self) -> None:
        assert referenced_variables("{% set x = 1 %}{{ x }}{% for i in itens %}{{ i }}{% endfor %}") == {
            "itens"
        }

    def test_a_syntax_error_is_a_template_problem(self) -> None:
        with pytest.raises(TemplateProblem):
            referenced_variables("{{ nome ")
