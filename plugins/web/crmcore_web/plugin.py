"""The ``web`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

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
