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
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import babel.dates
import babel.numbers
import jinja2
from jinja2.sandbox import SandboxedEnvironment, safe_range

from ..domain.errors import CRMError

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


def _babel_locale(locale: str) -> str:
    return locale.replace("-", "_")


@jinja2.pass_context
def _money(ctx: Any, amount: Decimal | int | str, currency: str | None = None) -> str:
    currency = currency or ctx.get("currency") or "USD"
    return babel.numbers.format_currency(Decimal(str(amount)), currency, locale=_babel_locale(ctx["locale"]))


@jinja2.pass_context
def _date(ctx: Any, value: date | datetime | None, format: str = "medium") -> str:
    if value is None:
        raise jinja2.UndefinedError("the date filter got None")
    if isinstance(value, datetime):
        value = value.astimezone(ZoneInfo(ctx.get("timezone") or "UTC")).date()
    return babel.dates.format_date(value, format=format, locale=_babel_locale(ctx["locale"]))


@jinja2.pass_context
def _datetime(ctx: Any, value: datetime | None, format: str = "medium") -> str:
    if value is None:
        raise jinja2.UndefinedError("the datetime filter got None")
    return babel.dates.format_datetime(value, format=format, tzinfo=ZoneInfo(ctx.get("timezone") or "UTC"),
                                       locale=_babel_locale(ctx["locale"]))


class _LimitExceeded(Exception):
    """Rendering went past a limit (raised inside the template, reported as a TemplateError)."""


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox plus a size check on ``*`` and a clock on ``range``.

    The deadline is per thread (a catalog serves every thread of a process).
    """

    intercepted_binops = frozenset(["*"])

    def __init__(self, max_chars: int, timeout: float, **options: Any) -> None:
        super().__init__(**options)
        self.max_chars, self.timeout = max_chars, timeout
        self._local = threading.local()
        self.globals["range"] = self._range

    def start(self) -> None:
        self._local.deadline = time.monotonic() + self.timeout

    def check_time(self) -> None:
        deadline = getattr(self._local, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            raise _LimitExceeded(f"rendering took longer than {self.timeout:g} s ([notify] render_timeout)")

    def too_long(self) -> _LimitExceeded:
        return _LimitExceeded(f"rendered more than {self.max_chars} characters ([notify] render_max_chars)")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > self.max_chars:
                    raise self.too_long()
        return super().call_binop(context, operator, left, right)

    def _range(self, *args: int) -> Iterator[int]:
        for count, item in enumerate(safe_range(*args)):
            if count % _CHECK_EVERY == 0:
                self.check_time()
            yield item


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
        self.env = _BoundedEnvironment(
            max_chars, timeout,
            loader=jinja2.FileSystemLoader([str(d) for d in self.dirs], encoding="utf-8"),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            keep_trailing_newline=True,
            auto_reload=False,  # compiled once per process: a campaign renders the same template 100k times
        )
        self.env.filters.update(money=_money, date=_date, datetime=_datetime)
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
        used, parts = self._templates(kind, locale)
        values = {**context, "locale": used}
        out = {part: _render(self.env, template, values) if template is not None else None
               for part, template in parts.items()}
        subject_out, text_out = out["subject"], out["text"]
        assert subject_out is not None and text_out is not None, "_templates() requires a subject and a text body"
        subject = " ".join(subject_out.split())  # one line: a newline in a header would be an injection
        return Rendered(kind, used, subject, text_out, out["html"])


def _render(env: _BoundedEnvironment, template: jinja2.Template, values: Mapping[str, Any]) -> str:
    """Render one part within the size and time limits."""
    chunks: list[str] = []
    size = 0
    env.start()
    try:
        for chunk in template.generate(values):
            size += len(chunk)
            if size > env.max_chars:
                raise env.too_long()
            env.check_time()
            chunks.append(chunk)
    except _LimitExceeded as exc:
        raise TemplateError(str(exc), template.filename) from None
    except (jinja2.UndefinedError, jinja2.exceptions.SecurityError, TypeError, ValueError,
            ArithmeticError, LookupError) as exc:
        raise TemplateError(_message(exc), template.filename, _template_line(exc, template.filename)) from None
    return "".join(chunks)


def _message(exc: BaseException) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"not allowed in a template: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line of the failure: Jinja rewrites tracebacks so that frames
    of template code carry the template's file name and line."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
