"""Jinja2 templates for the console, one environment per language."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from . import i18n

if TYPE_CHECKING:
    from starlette.requests import Request

PREFIX = "/console"


@functools.cache
def environment(locale: str) -> Environment:
    """The template environment speaking ``locale`` (gettext from its catalogue, Babel formats)."""
    env = Environment(loader=PackageLoader("crmcore_web", "templates"), autoescape=select_autoescape(),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True,
                      auto_reload=False)  # installed templates do not change under a running server
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters["num"] = lambda value, digits=0: i18n.number(value, locale, digits)
    env.filters["money"] = lambda value, currency: i18n.money(value, currency, locale)
    env.filters["pct"] = lambda value: i18n.percent(value, locale)
    env.filters["when"] = lambda value, zone=None: i18n.when(value, locale, zone)
    env.globals["prefix"] = PREFIX
    env.globals["locale"] = locale
    env.globals["html_lang"] = locale.replace("_", "-")
    return env


def render(request: "Request", template: str, locale: str, *, status: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """The template ``template`` rendered in ``locale`` as an HTML response."""
    console = getattr(request.state, "console", None)
    text = environment(locale).get_template(template).render(request=request, console=console, **context)
    return HTMLResponse(text, status_code=status, headers=headers)
