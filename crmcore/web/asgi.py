"""The ASGI application factory ``crm serve`` hands to uvicorn (one call per worker process).

Reads the options ``crm serve`` was given from ``CRM_SERVE_*`` environment
variables, so every worker opens the same database, configuration and plugin
set.  Deployments may point any ASGI server at ``crmcore.web.asgi:app`` (a
factory) with those variables set.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from ..app import CRM
from ..config import Config
from .app import create_app


def app() -> FastAPI:
    """Open the CRM the environment names (without migrating: ``crm serve`` did) and build the app."""
    env = os.environ
    plugins: list[str] | None = None
    if env.get("CRM_SERVE_NO_PLUGINS"):
        plugins = []
    elif env.get("CRM_SERVE_PLUGINS"):
        plugins = [p.strip() for p in env["CRM_SERVE_PLUGINS"].split(",") if p.strip()]
    config = Config.load(env.get("CRM_SERVE_CONFIG"), database_url=env.get("CRM_SERVE_DATABASE_URL"),
                         plugins=plugins, plugins_dir=env.get("CRM_SERVE_PLUGINS_DIR"))
    return create_app(CRM.open(config=config, migrate=False))
