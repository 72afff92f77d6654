"""Who a request acts as: ``Authorization: Bearer <token>`` (``crm token create``).

Every non-public route sits on a :func:`protected_router`, whose routes are
:class:`TokenRoute` routes.  Before a route runs, :func:`bearer_credential` only
takes the token from the header: the request's first unit of work checks it on
its own connection (one indexed query that also reads the user's role), so a
read costs one connection and at most one hand-off to a worker thread.  Until
the token is checked nothing can act: every unit of work and ``crm.actor``
check it first, and :class:`TokenRoute` checks a token the route never used
before it answers (an invalid token is always 401, whatever the route did or
raised).  From then on the request acts as the token's user: the services ask
``authorize``, apply record visibility and write the audit trail as that user,
as at the command line.

:func:`current_user` is the dependency for a route that needs the login itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from ..application.tokens import Credential, InvalidToken, current_credential
from ..application.uow import current_actor
from .threads import on_worker_thread, run_sync

if TYPE_CHECKING:
    from ..app import CRM

#: The OpenAPI security scheme of every protected route (``components.securitySchemes.token``).
SECURITY_SCHEME: dict[str, Any] = {"type": "http", "scheme": "bearer",
                                   "description": "An API token: `crm token create --user LOGIN --name NAME`."}


def crm_of(request: Request) -> "CRM":
    """The CRM the app serves (``create_app(crm)``)."""
    crm: CRM = request.app.state.crm
    return crm


def bearer_credential(request: Request) -> Credential:
    """The request's bearer token, to be checked at first use (401 at once when there is none).

    :class:`TokenRoute` calls it before the route runs: taking the header is not worth a
    dependency that FastAPI would solve on every request.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("send Authorization: Bearer <token> (crm token create)")
    return present_token(request, token.strip())


def present_token(request: Request, secret: str) -> Credential:
    """Make the API token ``secret`` the one ``request`` acts as, to be checked at first use.

    What :class:`TokenRoute` does with the ``Authorization`` header; a subclass that takes the
    token from elsewhere (the web console: its signed session cookie) calls it from
    :meth:`TokenRoute.take_credential`.
    """
    credential = Credential(secret)
    current_credential.set(credential)  # the route's worker thread copies this context
    current_actor.set(None)  # nobody the serving process acts as: the token's user, once checked
    request.state.credential = credential
    return credential


async def current_user(request: Request) -> str:
    """The login of the request's token (a dependency: ``login: str = Depends(current_user)``);
    401 when it is missing, unknown, revoked or expired."""
    credential: Credential | None = getattr(request.state, "credential", None)
    if credential is None:
        credential = bearer_credential(request)
    if credential.login is None:
        await run_sync(crm_of(request).tokens.check, credential)
    assert credential.login is not None
    return credential.login


def acting_login(request: Request) -> str:
    """The login the request acts as (in a route's worker thread: checks the token if still due)."""
    credential: Credential = request.state.credential
    return crm_of(request).tokens.check(credential)


class TokenRoute(APIRoute):
    """A route that needs a bearer token, and answers only once the token has been checked.

    The token comes from the ``Authorization`` header; a subclass may override
    :meth:`take_credential` to take it from elsewhere (a signed session cookie) and
    :meth:`refused` to answer an invalid one otherwise (a redirect to a sign-in page).  A
    plugin's route uses such a class with ``router.add_api_route(..., route_class_override=C)``.
    """

    def take_credential(self, request: Request) -> Credential:
        """The request's token (:func:`present_token`); raise :class:`InvalidToken` when it has none."""
        return bearer_credential(request)

    async def refused(self, request: Request, error: InvalidToken) -> Response:
        """The answer to a missing or invalid token: re-raised, so a 401 problem by default."""
        raise error

    def __init__(self, path: str, endpoint: Callable[..., Any], *,
                 openapi_extra: dict[str, Any] | None = None, **options: Any):
        if inspect.isfunction(endpoint) and not (inspect.iscoroutinefunction(endpoint)
                                                  or inspect.isgeneratorfunction(endpoint)):
            endpoint = on_worker_thread(endpoint)  # crmcore's worker threads, not Starlette's
        super().__init__(path, endpoint, openapi_extra={"security": [{"token": []}], **(openapi_extra or {})},
                         **options)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                self.take_credential(request)
                try:
                    response = await handler(request)
                except Exception:
                    await _settle(request)  # a bad token answers 401, not the route's error
                    raise
                await _settle(request)
            except InvalidToken as error:
                return await self.refused(request, error)
            return response

        return checked


async def _settle(request: Request) -> None:
    """Check the request's token if its route finished without using it (raises when invalid)."""
    credential: Credential | None = getattr(request.state, "credential", None)
    if credential is not None and credential.user is None:
        await run_sync(crm_of(request).tokens.check, credential)


def protected_router(**options: Any) -> APIRouter:
    """An ``APIRouter`` whose every route needs a valid bearer token (:class:`TokenRoute`)."""
    return APIRouter(route_class=TokenRoute, **options)
