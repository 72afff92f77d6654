"""``/unsubscribe``: the public page the signed links in marketing messages open.

No API token: the signed token in the link is the credential, and the page acts
as the built-in ``system`` actor.  The page itself (what GET shows, what POST
records, the error pages) is :mod:`crmcore.notify.unsubscribe`, shared with the
WSGI application; this module only adapts it to the HTTP API.  Point
``[notify] unsubscribe_url`` at it: ``https://crm.example.com/unsubscribe?token={token}``.

- ``GET /unsubscribe?token=...``: a confirmation page with a button; nothing changes.
- ``POST /unsubscribe?token=...``: records the withdrawal; a browser's form post and
  an RFC 8058 one-click request (body ``List-Unsubscribe=One-Click``) both work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from ..notify.unsubscribe import HEADERS, MAX_FORM_BYTES, Page, form_fields, handle, is_one_click, page

if TYPE_CHECKING:
    from ..app import CRM

_HTML: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The page."},
    400: {"content": {"text/html": {}}, "description": "A missing, damaged or foreign token: a page saying so."},
    413: {"content": {"text/html": {}}, "description": "A form body over 64 KiB."},
    503: {"content": {"text/html": {}}, "description": "Unsubscribe links are not configured here."},
}
_TOKEN = Query(default=None, description="The signed token from the link (`[notify] unsubscribe_url`).")


def _html(answer: Page) -> HTMLResponse:
    return HTMLResponse(answer.html, status_code=answer.status, headers=HEADERS)


def unsubscribe_router(crm: "CRM") -> APIRouter:
    """The public unsubscribe page (no ``current_user`` dependency: the link's token is the credential)."""
    router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"])

    @router.get("", response_class=HTMLResponse, responses=_HTML, operation_id="unsubscribe_page",
                summary="The confirmation page of an unsubscribe link (changes nothing)")
    def confirm(token: str | None = _TOKEN) -> HTMLResponse:
        return _html(handle(crm, "GET", token))

    @router.post("", response_class=HTMLResponse, responses=_HTML, operation_id="unsubscribe",
                 summary="Unsubscribe: the page's button, or an RFC 8058 one-click request")
    async def unsubscribe(request: Request, token: str | None = _TOKEN) -> HTMLResponse:
        body = bytearray()
        async for chunk in request.stream():  # a public endpoint: never buffer more than a small form
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return _html(page(413, "Request too large", "The form is too large."))
        fields = form_fields(request.headers.get("content-type"), bytes(body))
        token = token or next(iter(fields.get("token", [])), None)
        answer = await run_in_threadpool(handle, crm, "POST", token, is_one_click(fields))
        return _html(answer)

    return router
