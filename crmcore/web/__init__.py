"""The HTTP API (``crm serve``): :func:`create_app` and what a plugin's routes use.

A plugin adds routes with the ``register_routes`` hook; inside a route,
:func:`crm_of` gives the CRM, and the request acts as the token's user (checked
by its first unit of work; a route that needs the login itself declares
``Depends(current_user)``).  Raise :class:`Problem` (or any
:class:`crmcore.CRMError`) for an RFC 9457 error response.  :func:`run_sync` runs
blocking work on the API's worker threads (from an ``async`` route).

A route class of its own (``router.add_api_route(..., route_class_override=...)``)
subclassing :class:`TokenRoute` may take the token from elsewhere than the header
(:func:`present_token`), as the web console takes it from its session cookie.
"""

from ..application.tokens import InvalidToken
from .app import create_app
from .auth import TokenRoute, crm_of, current_user, present_token
from .encoding import JSON, record
from .problems import Problem
from .threads import run_sync

__all__ = ["JSON", "InvalidToken", "Problem", "TokenRoute", "create_app", "crm_of", "current_user", "present_token",
           "record", "run_sync"]
