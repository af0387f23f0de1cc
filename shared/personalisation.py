"""The personalisation language of campaigns: Jinja2 in an immutable sandbox.

Campaign checks a template when it is saved, sender renders it per recipient; both use this
module so that what passes the check is what gets sent. Variables: `nome` / `name`, `email`,
`link_descadastro` (the unsubscribe page) and every custom field of the recipient. The HTML body is autoescaped (a name with `<` stays
text); subject and text are not HTML. An undefined variable is an error, never an empty gap.
"""

from __future__ import annotations

from collections.abc import Mapping

from jinja2 import StrictUndefined, Template, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared.contracts.events import Recipient

_html = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
_plain = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


class TemplateProblem(ValueError):
    """A template does not compile or render; the message says where and why."""


def _compile(env: ImmutableSandboxedEnvironment, source: str, what: str) -> Template:
    try:
        return env.from_string(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise TemplateProblem(f"{what}{where}: {exc.message or exc}") from exc


def compile_html(source: str) -> Template:
    """Compile an HTML body; raises TemplateProblem."""
    return _compile(_html, source, "html")


def compile_plain(source: str, what: str) -> Template:
    """Compile a subject or text body; raises TemplateProblem naming `what`."""
    return _compile(_plain, source, what)


# The link to the recipient's unsubscribe page, which sender provides to every message.
UNSUBSCRIBE_VARIABLE = "link_descadastro"
# What every recipient has, whatever its group: the rest are the group's custom fields.
BUILT_IN_VARIABLES = frozenset({"nome", "name", "email", UNSUBSCRIBE_VARIABLE})


def referenced_variables(*sources: str) -> set[str]:
    """The variables the templates read (syntax errors raise TemplateProblem).

    Audience compares them with the columns of a campaign's groups before anything is queued:
    a field no group has fails the campaign at start, not every recipient at send time.
    """
    found: set[str] = set()
    for source in sources:
        try:
            found |= meta.find_undeclared_variables(_plain.parse(source))
        except TemplateError as exc:
            raise TemplateProblem(f"{exc.message or exc}") from exc
    return found


def variables(recipient: Recipient) -> dict[str, str]:
    """What a template sees of a recipient."""
    return {**recipient.fields, "nome": recipient.name, "name": recipient.name, "email": recipient.email}


def render(
    template: Template, recipient: Recipient, what: str, extra: Mapping[str, object] | None = None
) -> str:
    """Render for one recipient, `extra` variables winning over its fields; raises
    TemplateProblem (e.g. an undefined variable)."""
    try:
        return template.render(variables(recipient) if extra is None else {**variables(recipient), **extra})
    except TemplateError as exc:
        raise TemplateProblem(f"{what}: {exc.message or exc}") from exc
