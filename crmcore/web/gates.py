"""Routers looked at only for the paths they can serve.

Starlette finds a request's route by asking every top-level route in turn.  Since FastAPI 0.120 an
included router is one such route that, asked, walks its own routes through FastAPI's per-route
context set-up: 10-40 µs a router here, so a plugin page (whose router comes after the core's
sixteen) paid about 0.4 ms before its own code ran, more than rendering the page.  Every path of
ours starts with a fixed segment (``/customers/...``, ``/console/...``), so each included router is
given the first segments its routes start with and answers "no match" at once for any other path.
A router with a route whose first segment is a parameter, or one whose routes cannot be read, is
left as it was: the gate only ever skips a router that could not have matched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.routing import Match


def include_gated(app: FastAPI, router: APIRouter) -> None:
    """``app.include_router(router)``, with the included router asked only for paths whose first
    segment one of its routes starts with."""
    before = len(app.router.routes)
    app.include_router(router)
    segments = first_segments(router)
    added = app.router.routes[before:]
    if segments is None or len(added) != 1:
        return  # an older FastAPI copies the routes themselves: each is a cheap regex already
    route = added[0]
    try:
        route.matches = _gate(route.matches, segments)  # type: ignore[method-assign,assignment]
    except AttributeError:  # a slotted route class: leave it ungated
        return


def first_segments(router: APIRouter) -> frozenset[str] | None:
    """The first path segment of every route of ``router`` ("" for ``/``), or None when one of them
    is a parameter (``/{kind}/...``) and so could be anything."""
    found = set()
    for route in router.routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not path.startswith("/"):
            return None
        first = path[1:].split("/", 1)[0]
        if "{" in first:
            return None
        found.add(first)
    return frozenset(found)


def _gate(matches: Callable[[Any], tuple[Match, Any]], segments: frozenset[str]) -> Callable[[Any], tuple[Match, Any]]:
    def gated(scope: Any) -> tuple[Match, Any]:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # as Starlette's own matching sees the path
            path = path[len(root):]
        if path[1:].split("/", 1)[0] not in segments:
            return Match.NONE, {}
        return matches(scope)
    gated.__wrapped__ = matches  # type: ignore[attr-defined]
    return gated
