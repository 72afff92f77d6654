"""The HTTP API application: :func:`create_app`.

FastAPI on Starlette, served by uvicorn (``crm serve``).  FastAPI because the
API is generated from what the core knows: pydantic models built at start-up
from the entities and the configured custom fields give request validation,
the OpenAPI 3.1 document and the interactive docs from one source, with no
hand-kept schema.  Routes are plain functions that call the CRM's services
(they run in Starlette's worker threads: the services are synchronous
SQLAlchemy code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from .. import __version__
from ..domain.entities import ENTITY_TYPES
from . import problems
from .auth import SECURITY_SCHEME, protected_router
from .entities import entity_router
from .schemas import entity_models
from .gates import include_gated

if TYPE_CHECKING:
    from ..app import CRM

def create_app(crm: "CRM") -> FastAPI:
    """The HTTP API over ``crm`` (its database, configuration and plugin set), to serve or embed.

    ``uvicorn.run(create_app(CRM.open()))``; ``crm serve`` does the same.
    """
    app = FastAPI(title="crmcore", version=__version__, docs_url="/docs", redoc_url=None,
                  openapi_url="/openapi.json",
                  description="The crmcore HTTP API: every request acts as the user of its API token "
                              "(`crm token create`). Errors are RFC 9457 problem details.")
    app.state.crm = crm
    problems.install(app)
    models = entity_models(crm.custom_fields)
    routers = [entity_router(kind, models[kind]) for kind in ENTITY_TYPES]
    routers += [factory(crm) for factory in _family_routers()]
    routers.append(_plugin_routes(crm))
    for router in routers:
        include_gated(app, router)

    @app.get("/health", tags=["service"], summary="Liveness: the process answers (no token needed)",
             operation_id="health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _family_routers() -> list[Callable[["CRM"], APIRouter]]:
    from . import routes

    return routes.ROUTERS


def _plugin_routes(crm: "CRM") -> APIRouter:
    """What plugins add through ``register_routes`` (every route behind a token)."""
    # A plugin's route calls the services, which answer 404 (a record it may not see) and 409 (an
    # archived record) as readily as 403 and 422: the document says so for every plugin route.
    router = protected_router(responses=problems.responses(401, 403, 404, 409, 422))

    def kwargs(plugin: str) -> dict[str, Any]:
        return {"router": router, "crm": crm}

    crm.plugins.call_each("register_routes", kwargs)
    return router


#: The ``name`` prefix of a plugin's GET route that is a page people open (``crm serve`` prints it).
PAGE_PREFIX = "page:"


def start_pages(crm: "CRM") -> list[tuple[str, str]]:
    """The pages plugins add for people to open: ``(label, path)`` of each GET route named
    ``page:LABEL`` (``crm serve`` prints their addresses), in the order they were added."""
    found = []
    for route in _plugin_routes(crm).routes:
        name, path = getattr(route, "name", "") or "", getattr(route, "path", "")
        if name.startswith(PAGE_PREFIX) and "GET" in (getattr(route, "methods", None) or ()):
            found.append((name.removeprefix(PAGE_PREFIX), path))
    return found


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the shared problem schema."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = problems.PROBLEM_SCHEMA
        components.setdefault("securitySchemes", {})["token"] = SECURITY_SCHEME
        app.openapi_schema = schema
    return app.openapi_schema
