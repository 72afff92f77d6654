"""The routers beyond the entities, in the order the API document lists them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter

from .duplicates import duplicates_router
from .imports import imports_router
from .inbound import inbound_router
from .jobs import jobs_router
from .loyalty import loyalty_router
from .notify import notify_router
from .reports import reports_router
from .segments import segments_router
from .unsubscribe import unsubscribe_router

if TYPE_CHECKING:
    from ..app import CRM

ROUTERS: list[Callable[["CRM"], APIRouter]] = [segments_router, loyalty_router, notify_router, reports_router,
                                               imports_router, inbound_router, unsubscribe_router, duplicates_router,
                                               jobs_router]
