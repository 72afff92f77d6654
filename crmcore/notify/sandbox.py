"""The Jinja2 side of message templates: the bounded sandbox, the filters and rendering a part.

Imported with the first :class:`~crmcore.notify.templates.TemplateCatalog` (itself made on
first use), so a command that renders no message never imports Jinja2 or Babel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import babel.dates
import babel.numbers
import jinja2
from jinja2.sandbox import SandboxedEnvironment, safe_range

from .templates import _CHECK_EVERY, TemplateError


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


class BoundedEnvironment(SandboxedEnvironment):
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


#: The filters every catalog's environment has.
FILTERS = {"money": _money, "date": _date, "datetime": _datetime}


def render_part(env: BoundedEnvironment, template: jinja2.Template, values: Mapping[str, Any]) -> str:
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
