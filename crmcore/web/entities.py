"""The entity resources: ``/customers``, ``/contacts``, ``/interactions``, ``/deals``, ``/tasks``.

Generated from :mod:`crmcore.web.schemas` for each entity; every route calls the
entity's service (``crm.customers``, ...), so authorization, record visibility,
validation, events and the audit trail are the same as at the command line.

- ``GET /customers``: filters as ``crm customer list --where`` (``where=amount>=100``,
  repeatable), ``q`` (search), ``sort`` (``-created_at``), ``archived``; keyset
  pages of ``limit`` records with a ``cursor`` and a ``next`` link.
- ``GET /customers/{id}``: the record and its ``ETag``.
- ``POST /customers``: ``201`` with ``Location`` and ``ETag``; an ``Idempotency-Key`` header
  makes a retry return the first response instead of a second record.
- ``PATCH /customers/{id}``: the fields sent change; ``If-Match: <ETag>`` makes a stale
  write ``412`` (nothing written).
- ``DELETE /customers/{id}``: archives a customer or deal (``?purge=true`` removes it, where
  allowed); deletes a contact or interaction.  ``POST /customers/{id}/restore`` un-archives.
- ``POST /deals/{id}/move``: move a deal to a stage.
- ``POST /tasks/{id}/done`` and ``POST /tasks/{id}/cancel``: complete a follow-up task.
"""

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from starlette.responses import Response

from ..application.idempotency import once, request_hash
from ..application.services import EntityService
from ..domain.versions import version_of_data
from ..store.filters import parse_expression
from .auth import crm_of, protected_router
from .encoding import JSON, decode_cursor, encode_cursor, etag, fields, if_match_version, record
from .problems import responses
from .schemas import PLURALS, EntityModels
from .threads import run_point_read

#: The most records one page holds.
MAX_PAGE = 500


def _service(request: Request, kind: str) -> EntityService[Any]:
    service: EntityService[Any] = getattr(crm_of(request), PLURALS[kind])
    return service


def _filters(where: list[str]) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for expression in where:
        key, value = parse_expression(expression)
        filters[key] = value
    return filters


#: The response headers the entity routes send, for the OpenAPI document.
_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {"description": "The record's version: send it as If-Match to change it safely.",
             "required": True, "schema": {"type": "string"}},
    "Location": {"description": "The new record's path.", "required": True, "schema": {"type": "string"}},
    "Idempotency-Replayed": {"description": "`true` when this is the stored first response to an "
                                            "Idempotency-Key sent again.", "schema": {"type": "string"}},
    "Link": {"description": "The next page (`rel=\"next\"`), when there is one.", "schema": {"type": "string"}},
}


def _sends(status: int, *headers: str, description: str = "Successful Response") -> dict[int | str, dict[str, Any]]:
    """The success response's entry naming the headers it carries (the body comes from the route's model)."""
    entry: dict[str, Any] = {"description": description}
    if headers:
        entry["headers"] = {name: _HEADERS[name] for name in headers}
    return {status: entry}


def _one(entity: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSON:
    return JSON(fields(entity), status_code=status, headers={"ETag": etag(entity), **(headers or {})})


def entity_router(kind: str, models: EntityModels) -> APIRouter:
    """The routes of one entity."""
    plural = PLURALS[kind]
    router = protected_router(prefix=f"/{plural}", tags=[plural], responses=responses(401, 403, 422))
    Read, Create, Patch, Page = models.read, models.create, models.patch, models.page
    IdPath = Path(ge=1, le=2**31 - 1, description=f"The {kind}'s id.")
    archiving = kind in ("customer", "deal")

    @router.get("", response_model=Page, summary=f"List {plural}", operation_id=f"list_{plural}",
                responses=_sends(200, "Link"))
    def list_records(
        request: Request,
        where: list[str] = Query(default=[], description="A filter as the CLI's --where: `FIELD=VALUE` "
                                 "(or !=, >=, <=, >, <, ~ for contains); `attributes.NAME` for a custom "
                                 "field. Repeat for AND."),
        q: str | None = Query(default=None, max_length=1000, description="Search name, email, phone (any script)."),
        sort: str = Query(default="id", max_length=64, description="A column without NULLs; `-` for descending."),
        limit: int = Query(default=50, ge=1, le=MAX_PAGE),
        cursor: str | None = Query(default=None, max_length=2000, description="From the previous page's `cursor`."),
        archived: Literal["exclude", "include", "only"] = Query(default="exclude"),
    ) -> Response:
        service = _service(request, kind)
        after = decode_cursor(cursor) if cursor else None
        rows = service.page(_filters(where), sort, limit + 1, after, q, archived=archived)
        more, rows = len(rows) > limit, rows[:limit]
        body: dict[str, Any] = {"items": [fields(r) for r in rows], "next": None, "cursor": None}
        headers = {}
        if more:
            last = body["items"][-1]
            body["cursor"] = encode_cursor(last[sort.lstrip("-")], last["id"])
            body["next"] = str(request.url.include_query_params(cursor=body["cursor"]))
            headers["Link"] = f'<{body["next"]}>; rel="next"'
        return JSON(body, headers=headers)

    @router.get("/{id}", response_model=Read, summary=f"Get a {kind}", operation_id=f"get_{kind}",
                responses={**_sends(200, "ETag"), **responses(404)})
    async def get_record(request: Request, id: int = IdPath) -> Response:
        return _one(await run_point_read(crm_of(request), _service(request, kind).get, id))

    @router.post("", response_model=Read, status_code=201, summary=f"Create a {kind}",
                 operation_id=f"create_{kind}",
                 responses={**_sends(201, "Location", "ETag", "Idempotency-Replayed"), **responses(409)})
    def create_record(
        request: Request, body: Create = Body(...),  # type: ignore[valid-type]
        idempotency_key: str | None = Header(default=None, max_length=200, description=
                                             "Send the same key to retry safely: the first response returns."),
    ) -> Response:
        service = _service(request, kind)
        fields = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]

        def work() -> tuple[int, Any]:
            return 201, record(service.add(**fields))

        if idempotency_key is None:
            status, data = work()
            replayed = False
        else:
            digest = request_hash(body.model_dump(mode="json", exclude_unset=True))  # type: ignore[attr-defined]
            stored, replayed = once(crm_of(request), idempotency_key, f"POST /{plural}", digest, work)
            status, data = stored.status, stored.body
        headers = {"Location": f"/{plural}/{data['id']}", "ETag": f'"{version_of_data(data)}"'}
        if replayed:
            headers["Idempotency-Replayed"] = "true"
        return JSON(data, status_code=status, headers=headers)

    @router.patch("/{id}", response_model=Read, summary=f"Change a {kind}", operation_id=f"update_{kind}",
                  responses={**_sends(200, "ETag"), **responses(404, 409, 412)})
    def update_record(request: Request, body: Patch = Body(...), id: int = IdPath,  # type: ignore[valid-type]
                      if_match: str | None = Header(default=None, max_length=200, description=
                                                    "The ETag you read: a stale write is refused (412).")) -> Response:
        changes = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
        return _one(_service(request, kind).update_if(id, if_match_version(if_match), changes))

    @router.delete("/{id}", status_code=204, summary=f"Delete a {kind}" + (" (archive it)" if archiving else ""),
                   operation_id=f"delete_{kind}",
                   responses={**_sends(204, description="Done: no body."), **responses(404, 409)})
    def delete_record(request: Request, id: int = IdPath,
                      purge: bool = Query(default=False, description="Remove for real instead of archiving "
                                          "(refused when the record has history).")) -> Response:
        service = _service(request, kind)
        if archiving:
            service.delete(id, purge=purge)
        else:
            service.delete(id)
        return Response(status_code=204)

    if archiving:
        @router.post("/{id}/restore", response_model=Read, summary=f"Restore an archived {kind}",
                     operation_id=f"restore_{kind}", responses={**_sends(200, "ETag"), **responses(404, 409)})
        def restore_record(request: Request, id: int = IdPath) -> Response:
            return _one(_service(request, kind).restore(id))  # type: ignore[attr-defined]

    if kind == "deal":
        @router.post("/{id}/move", response_model=Read, summary="Move a deal to a stage",
                     operation_id="move_deal", responses={**_sends(200, "ETag"), **responses(404, 409)})
        def move_deal(request: Request, id: int = IdPath,
                      stage: str = Body(..., embed=True, max_length=100),
                      lost_reason: str | None = Body(default=None, embed=True, max_length=500)) -> Response:
            return _one(crm_of(request).deals.move(id, stage, lost_reason))

    if kind == "task":
        @router.post("/{id}/done", response_model=Read, summary="Mark a task done",
                     operation_id="complete_task", responses={**_sends(200, "ETag"), **responses(404)})
        def complete_task(request: Request, id: int = IdPath) -> Response:
            return _one(crm_of(request).tasks.done(id))

        @router.post("/{id}/cancel", response_model=Read, summary="Cancel a task",
                     operation_id="cancel_task", responses={**_sends(200, "ETag"), **responses(404)})
        def cancel_task(request: Request, id: int = IdPath) -> Response:
            return _one(crm_of(request).tasks.cancel(id))

    return router

