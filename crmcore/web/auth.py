"""Who a request acts as: ``Authorization: Bearer <token>`` (``crm token create``).

:func:`current_user` is the dependency every non-public route has.  It checks
the token (one indexed query) and makes the token's user the acting user for
the rest of the request, so the services ask ``authorize`` and apply record
visibility and write the audit trail as that user, as at the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from ..application.tokens import InvalidToken
from ..application.uow import current_actor

if TYPE_CHECKING:
    from ..app import CRM

_bearer = HTTPBearer(auto_error=False, scheme_name="token",
                     description="An API token: `crm token create --user LOGIN --name NAME`.")


def crm_of(request: Request) -> "CRM":
    """The CRM the app serves (``create_app(crm)``)."""
    crm: CRM = request.app.state.crm
    return crm


async def current_user(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
    """The login of the request's token; 401 when it is missing, unknown, revoked or expired.

    Sets the acting user in the request's context: the route's work (run in a worker
    thread, which copies the context) acts as this user.
    """
    if credentials is None:
        raise InvalidToken("send Authorization: Bearer <token> (crm token create)")
    login = await run_in_threadpool(crm_of(request).tokens.authenticate, credentials.credentials)
    current_actor.set(login)
    request.state.login = login
    return login
