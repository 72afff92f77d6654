"""The HTTP API (``crm serve``): :func:`create_app` and what a plugin's routes use.

A plugin adds routes with the ``register_routes`` hook; inside a route,
:func:`crm_of` gives the CRM, and the request acts as the token's user (checked
by its first unit of work; a route that needs the login itself declares
``Depends(current_user)``).  Raise :class:`Problem` (or any
:class:`crmcore.CRMError`) for an RFC 9457 error response.
"""

from .app import create_app
from .auth import crm_of, current_user
from .encoding import JSON, record
from .problems import Problem

__all__ = ["JSON", "Problem", "create_app", "crm_of", "current_user", "record"]
