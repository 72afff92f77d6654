"""The ``web`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import crmcore

from .settings import WebSettings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from crmcore import CRM


@crmcore.hookimpl
def register_settings(register: crmcore.Register[type[Any]]) -> None:
    """Declare ``[plugins.web]`` (:class:`WebSettings`)."""
    register(WebSettings)


@crmcore.hookimpl
def register_routes(router: "APIRouter", crm: "CRM") -> None:
    """Add the console's pages under ``/console`` (FastAPI and Jinja2 load only when the API starts)."""
    from .routes import add_routes

    add_routes(router, crm)


@crmcore.hookimpl
def render_dashboard(crm: "CRM", entries: list[Any], as_of: datetime) -> str:
    """``crm report dashboard``'s index: the console's dashboard, self-contained and offline."""
    from .export import dashboard_page

    return dashboard_page(crm, entries, as_of)
