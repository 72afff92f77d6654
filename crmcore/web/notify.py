"""``/notify``: queue messages, read the outbox, list channels and templates.

Every route calls the notify engines (``crm.messages``, ``crm.notify``), so
consent, the outbox's idempotency keys, authorization (``notify.*``) and record
visibility (a message is visible with its customer) are those of ``crm notify``.
Delivery stays with ``crm notify dispatch`` / ``crm notify worker`` (a job).

- ``POST /notify/messages``: queue one message (a template rendered for the
  customer, or a subject and body); ``201`` with the outbox row.  An
  ``Idempotency-Key`` header becomes the message's outbox key (per API user): a
  retry returns the first message with ``200`` and ``Idempotency-Replayed: true``.
- ``GET /notify/outbox``: newest first, filtered by ``status``, ``customer_id``,
  ``channel``; pages of ``limit`` with a ``cursor``.
- ``GET /notify/outbox/{id}``: one message with its delivery state.
- ``GET /notify/channels``, ``GET /notify/templates``: the catalogs.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ..domain.errors import NotFound
from ..notify.messages import SUBJECT_LIMIT
from ..notify.outbox import STATUSES
from .auth import acting_login, crm_of, protected_router
from .encoding import JSON, decode_cursor, encode_cursor
from .problems import responses
from .schemas import Id

if TYPE_CHECKING:
    from ..app import CRM

MAX_PAGE = 500
Status = Literal[STATUSES]  # type: ignore[valid-type]


class MessageIn(BaseModel):
    """A message to queue: ``template`` (rendered for ``customer_id``) or ``subject`` and ``body``."""

    model_config = ConfigDict(extra="forbid")
    channel: str | None = Field(None, max_length=100, description="A channel (default: `[notify] channel`).")
    customer_id: Id | None = Field(None, description="The customer; the recipient defaults to their address.")
    to: str | None = Field(None, max_length=320, description="The recipient's address, instead of the customer's.")
    template: str | None = Field(None, max_length=200, description="A template (`GET /notify/templates`).")
    locale: str | None = Field(None, max_length=35, description="Render in this locale (default: the customer's).")
    deal_id: Id | None = Field(None, description="The template's `deal`.")
    subject: str | None = Field(None, max_length=SUBJECT_LIMIT)
    body: str | None = Field(None, max_length=1_000_000)
    purpose: Literal["transactional", "marketing"] = "transactional"


class OutboxMessage(BaseModel):
    """An outbox row: the message and its delivery state."""

    id: int
    channel: str
    customer_id: int | None
    recipient: str | None
    purpose: str
    status: str
    subject: str | None
    body: str | None
    payload: dict[str, Any] | None
    idempotency_key: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None = None
    sent_at: datetime | None
    provider_id: str | None
    last_error: str | None
    created_at: datetime
    claimed_at: datetime | None = None
    claimed_by: str | None = None
    delivery: dict[str, Any] | None = Field(None, description="What the channel reported (segments, replies).")


class OutboxPage(BaseModel):
    """A page of the outbox, newest first."""

    items: list[OutboxMessage]
    next: str | None = Field(None, description="The URL of the next page (null on the last page).")
    cursor: str | None = Field(None, description="The cursor of the next page (null on the last page).")


def _message(crm: "CRM", message_id: int) -> dict[str, Any]:
    rows = crm.notify.outbox(limit=1, message_id=message_id)
    if not rows:  # none, or its customer is not visible to the acting user
        raise NotFound("message", message_id)
    return rows[0]


def notify_router(crm: "CRM") -> APIRouter:
    """The ``/notify`` routes."""
    router = protected_router(prefix="/notify", tags=["notify"], responses=responses(401, 403, 422))

    @router.post("/messages", response_model=OutboxMessage, status_code=201, operation_id="send_message",
                 summary="Queue a message (delivered by `crm notify dispatch`)",
                 responses={**responses(404), 200: {"model": OutboxMessage, "description":
                                                    "A retry with an earlier Idempotency-Key: the first message."}})
    def send_message(
        request: Request, message: MessageIn = Body(...),
        idempotency_key: str | None = Header(default=None, min_length=1, max_length=150, description=
                                             "Send the same key to retry safely: the first message returns."),
    ) -> Response:
        key = f"api:{acting_login(request)}:{idempotency_key}" if idempotency_key else None
        row, new = crm.messages.send(
            message.channel, customer_id=message.customer_id, recipient=message.to, template=message.template,
            subject=message.subject, body=message.body, purpose=message.purpose, key=key, locale=message.locale,
            deal_id=message.deal_id)
        headers = {"Location": f"/notify/outbox/{row['id']}"}
        if not new:
            headers["Idempotency-Replayed"] = "true"
        return JSON(row, status_code=201 if new else 200, headers=headers)

    @router.get("/outbox", response_model=OutboxPage, operation_id="list_outbox",
                summary="Messages in the outbox, newest first, with their delivery state")
    def list_outbox(
        request: Request,
        status: Status | None = Query(default=None),
        customer_id: Id | None = Query(default=None),
        channel: str | None = Query(default=None, max_length=100),
        limit: int = Query(default=50, ge=1, le=MAX_PAGE),
        cursor: str | None = Query(default=None, max_length=200, description="From the previous page's `cursor`."),
    ) -> Response:
        before = decode_cursor(cursor)[1] if cursor else None
        rows = crm.notify.outbox(status=status, customer_id=customer_id, channel=channel, limit=limit + 1,
                                 before_id=before)
        more, rows = len(rows) > limit, rows[:limit]
        body: dict[str, Any] = {"items": rows, "next": None, "cursor": None}
        headers = {}
        if more:
            body["cursor"] = encode_cursor(rows[-1]["id"], rows[-1]["id"])
            body["next"] = str(request.url.include_query_params(cursor=body["cursor"]))
            headers["Link"] = f'<{body["next"]}>; rel="next"'
        return JSON(body, headers=headers)

    @router.get("/outbox/{id}", response_model=OutboxMessage, operation_id="get_message",
                summary="One message and its delivery state", responses=responses(404))
    def get_message(id: int = Path(ge=1, le=2**31 - 1)) -> Response:
        return JSON(_message(crm, id))

    @router.get("/channels", operation_id="list_channels", summary="The notification channels")
    def list_channels() -> Response:
        default = crm.config.notify.channel
        return JSON([{"name": c.name, "description": c.description, "address": c.address,
                      "default": c.name == default,
                      "options": [f.name for f in attrs.fields(c.options_type)] if c.options_type else []}
                     for c in crm.notify.channels()])

    @router.get("/templates", operation_id="list_templates", summary="Message templates and their locales")
    def list_templates() -> Response:
        return JSON(crm.messages.templates())

    return router
