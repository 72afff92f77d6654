"""Message templates: Jinja2, sandboxed, strict, one per kind and locale.

Layout of a templates directory, one directory per message kind::

    thank-you/
        subject.en.txt      the subject line (one line; surrounding space is dropped)
        body.en.txt         the plain-text part
        body.en.html        the HTML part (optional; autoescaped)
        subject.zh-CN.txt
        body.zh-CN.txt

Directories are searched in order, file by file: ``[notify] templates_dir``
first, then the directories plugins register (``register_templates``), so a
company overrides one file of a built-in template without copying the rest.

Templates run in Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment` (a
template cannot reach Python internals) with :class:`~jinja2.StrictUndefined`:
an unknown variable is a :class:`TemplateError` naming the file and line, never
a blank in a sent mail.  Rendering is bounded: a part longer than
``max_chars`` (``[notify] render_max_chars``) or taking longer than ``timeout``
seconds (``[notify] render_timeout``) is a :class:`TemplateError` naming the
file.  The size is checked as output is produced and before a string is
repeated (``'x' * n``); the time between output chunks and while iterating
``range``, so neither a huge string nor nested empty loops run on.  Filters ``money``, ``date`` and ``datetime`` format
with babel in the message's locale.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..domain.errors import CRMError

if TYPE_CHECKING:
    import jinja2

# Jinja2 and Babel are imported with the first catalog (crmcore.notify.sandbox): a command that
# renders no message never loads them (they cost every command's start-up about 25 ms).

PARTS = ("subject", "body.txt", "body.html")
DEFAULT_MAX_CHARS = 1_000_000
DEFAULT_TIMEOUT_S = 5.0
_CHECK_EVERY = 1000  # range items between two looks at the clock
LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class TemplateError(CRMError):
    """A template is missing, does not parse, or uses a variable the context lacks.

    :ivar file: the template file (or None when no file is involved).
    :ivar line: the line in that file, when known.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file, self.line = file, line
        where = f"template {file}, line {line}: " if file and line else f"template {file}: " if file else ""
        super().__init__(f"{where}{message}")


@attrs.frozen
class Rendered:
    """A rendered message: subject, plain text and (optional) HTML."""

    template: str
    locale: str
    subject: str
    text: str
    html: str | None


class TemplateCatalog:
    """Templates found in an ordered list of directories.

    :param dirs: searched in order, file by file.
    :param default_locale: used when a kind has no files for the wanted locale.
    :param max_chars: the longest a rendered part may be.
    :param timeout: seconds a part may take to render.
    """

    def __init__(self, dirs: Sequence[str | Path], default_locale: str = "en", *,
                 max_chars: int = DEFAULT_MAX_CHARS, timeout: float = DEFAULT_TIMEOUT_S):
        self.dirs = [Path(d) for d in dirs]
        self.default_locale = default_locale
        import jinja2

        from .sandbox import FILTERS, BoundedEnvironment

        self.env = BoundedEnvironment(
            max_chars, timeout,
            loader=jinja2.FileSystemLoader([str(d) for d in self.dirs], encoding="utf-8"),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            keep_trailing_newline=True,
            auto_reload=False,  # compiled once per process: a campaign renders the same template 100k times
        )
        self.env.filters.update(FILTERS)
        self._resolved: dict[tuple[str, str], tuple[str, dict[str, jinja2.Template | None]]] = {}

    # -- finding -----------------------------------------------------------------------------------
    def kinds(self) -> list[str]:
        """Every template kind in any directory."""
        return sorted({p.name for d in self.dirs if d.is_dir() for p in d.iterdir()
                       if p.is_dir() and any(p.glob("subject.*.txt"))})

    def locales(self, kind: str) -> list[str]:
        """The locales a kind has a subject for."""
        return sorted({p.name[len("subject."):-len(".txt")] for d in self.dirs for p in (d / kind).glob("subject.*.txt")})

    def resolve(self, kind: str, locale: str | None) -> str:
        """The locale that will be used for ``kind``: the wanted one, its language
        (``zh`` for ``zh-TW``), or the default; :class:`TemplateError` if none exists."""
        have = self.locales(kind)
        if not have:
            known = ", ".join(self.kinds()) or "none"
            raise TemplateError(f"no template {kind!r} (known: {known}; searched {', '.join(map(str, self.dirs))})")
        wanted = [locale, locale.split("-")[0]] if locale else []
        for candidate in [*wanted, self.default_locale]:
            if candidate in have:
                return candidate
        raise TemplateError(f"template {kind!r} has no locale {locale or self.default_locale!r} "
                            f"nor the default {self.default_locale!r} (has: {', '.join(have)})")

    def _templates(self, kind: str, locale: str | None) -> tuple[str, dict[str, jinja2.Template | None]]:
        key = (kind, locale or "")
        if key not in self._resolved:
            import jinja2

            used = self.resolve(kind, locale)
            names = {"subject": f"{kind}/subject.{used}.txt", "text": f"{kind}/body.{used}.txt",
                     "html": f"{kind}/body.{used}.html"}
            found: dict[str, jinja2.Template | None] = {}
            for part, name in names.items():
                try:
                    found[part] = self.env.get_template(name)
                except jinja2.TemplateNotFound:
                    if part != "html":
                        raise TemplateError(f"template {kind!r} ({used}) has no {name.split('/')[1]}") from None
                    found[part] = None
                except jinja2.TemplateSyntaxError as exc:
                    raise TemplateError(f"syntax error: {exc.message}", exc.filename or name, exc.lineno) from None
            self._resolved[key] = (used, found)
        return self._resolved[key]

    def check(self, kind: str, locale: str | None = None) -> str:
        """Load (and so parse) a template's parts; returns the locale used."""
        return self._templates(kind, locale)[0]

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, kind: str, locale: str | None, context: Mapping[str, Any]) -> Rendered:
        """Render subject, text and HTML of ``kind`` in ``locale`` (with fallback)."""
        from .sandbox import render_part

        used, parts = self._templates(kind, locale)
        values = {**context, "locale": used}
        out = {part: render_part(self.env, template, values) if template is not None else None
               for part, template in parts.items()}
        subject_out, text_out = out["subject"], out["text"]
        assert subject_out is not None and text_out is not None, "_templates() requires a subject and a text body"
        subject = " ".join(subject_out.split())  # one line: a newline in a header would be an injection
        return Rendered(kind, used, subject, text_out, out["html"])
