"""The gate on each included router (crmcore.web.gates) only skips routers that could not have
matched: for every path the API documents, and for paths it does not know, Starlette's walk over the
top-level routes picks the same route, with the same match, gated as ungated."""

from __future__ import annotations

import re

import crmcore
from fastapi import APIRouter
from starlette.routing import Match

from crmcore.web import create_app
from crmcore.web.gates import first_segments

PLUGINS = ["access", "loyalty", "notify", "reports", "segments", "web"]


def _first_match(routes, scope, *, gated: bool):
    for index, route in enumerate(routes):
        matches = route.matches if gated else getattr(route.matches, "__wrapped__", route.matches)
        match, _ = matches(dict(scope))
        if match != Match.NONE:
            return index, match
    return None, Match.NONE


def test_every_path_finds_the_same_route_gated_and_ungated(tmp_path):
    crm = crmcore.CRM.open(config=crmcore.Config.from_mapping({
        "database_url": f"sqlite:///{tmp_path / 'crm.db'}", "plugins": PLUGINS}))
    try:
        app = create_app(crm)
        routes = app.router.routes
        assert any(hasattr(r.matches, "__wrapped__") for r in routes), "no router was gated"
        paths = [re.sub(r"\{[^}]+\}", "7", p) for p in app.openapi()["paths"]]
        paths += ["/console/customers", "/console/customers/7", "/nowhere", "/", "/customers/7/nothing"]
        assert "/console/customers" in paths
        for path in paths:
            for method in ("GET", "POST", "DELETE"):
                scope = {"type": "http", "path": path, "root_path": "", "method": method, "headers": []}
                assert _first_match(routes, scope, gated=True) == _first_match(routes, scope, gated=False), (method, path)
        unknown = {"type": "http", "path": "/nowhere", "root_path": "", "method": "GET", "headers": []}
        assert _first_match(routes, unknown, gated=True) == (None, Match.NONE)
    finally:
        crm.close()


def test_a_router_with_a_parameter_first_is_not_gated():
    fixed, open_ended = APIRouter(), APIRouter()
    fixed.add_api_route("/a/{id}", lambda id: id)
    fixed.add_api_route("/b", lambda: None)
    open_ended.add_api_route("/{kind}/x", lambda kind: kind)
    assert first_segments(fixed) == frozenset({"a", "b"})
    assert first_segments(open_ended) is None
