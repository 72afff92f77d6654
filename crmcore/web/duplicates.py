"""Duplicates over HTTP: the door check, candidate clusters, merge and unmerge.

- ``GET /duplicates?email=&phone=&external_id=``: the customers a new customer with these
  fields would duplicate (the door check ``POST /customers`` runs: a duplicate there is a ``409``
  problem of type ``duplicate`` listing them).
- ``GET /duplicates/clusters?min_score=``: candidate clusters with scores and what matched.
- ``POST /customers/{id}/merge`` ``{"others": [..], "prefer": {"email": 7}}``: merge others into
  the customer (``201``, the merge); ``POST /merges/{id}/undo``: undo a merge.

Every route calls ``crm.duplicates`` / ``crm.merges``, which authorize (``customer.duplicates``,
``customer.merge``, ``customer.unmerge``), apply record visibility and write the audit trail.
"""

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from .auth import crm_of, current_user
from .encoding import JSON
from .problems import responses

if TYPE_CHECKING:
    from ..app import CRM

MAX_ID = 2**31 - 1
#: A customer id in a body (bounded: ids are 32-bit on every database).
CustomerId = Annotated[int, Field(ge=1, le=MAX_ID)]


class MergeRequest(BaseModel):
    """``POST /customers/{id}/merge``."""

    model_config = ConfigDict(extra="forbid")
    others: list[CustomerId] = Field(min_length=1, max_length=100, description="The customers merged into this one.")
    prefer: dict[Annotated[str, Field(max_length=100)], CustomerId] = Field(default_factory=dict, max_length=50,
                                   description="Field (or `attributes.NAME`) -> the customer whose value it takes.")
    rule: str | None = Field(default=None, pattern="^(non-empty|newest|kept)$",
                             description="How conflicting fields are settled (default: [duplicates] merge_rule).")


def duplicates_router(crm: "CRM") -> APIRouter:
    """The duplicate routes (``/duplicates``, ``/customers/{id}/merge``, ``/merges/{id}/undo``)."""
    router = APIRouter(tags=["duplicates"], dependencies=[Depends(current_user)], responses=responses(401, 403, 422))

    @router.get("/duplicates", summary="The customers a new customer with these fields would duplicate",
                operation_id="check_duplicates")
    def check(request: Request,
              email: str | None = Query(default=None, max_length=320),
              phone: str | None = Query(default=None, max_length=32),
              external_id: str | None = Query(default=None, max_length=100)) -> Response:
        given = {k: v for k, v in (("email", email), ("phone", phone), ("external_id", external_id)) if v}
        found = crm_of(request).duplicates.check(**given)
        return JSON([{"customer_id": m.customer_id, "name": m.name, "fields": list(m.fields),
                      "message": m.describe()} for m in found])

    @router.get("/duplicates/clusters", summary="Candidate duplicate clusters, best first",
                operation_id="list_duplicate_clusters")
    def clusters(request: Request, min_score: float | None = Query(default=None, ge=0, le=1),
                 limit: int = Query(default=100, ge=1, le=1000)) -> Response:
        found = crm_of(request).duplicates.find(min_score)
        return JSON([c.as_dict() for c in found[:limit]])

    @router.post("/customers/{id}/merge", status_code=201, summary="Merge customers into this one",
                 operation_id="merge_customers", responses=responses(404, 409))
    def merge(request: Request, id: int = Path(ge=1, le=MAX_ID), body: MergeRequest = Body(...)) -> Response:
        result = crm_of(request).merges.merge(id, body.others, body.prefer, body.rule)
        data: dict[str, Any] = result.as_dict()
        return JSON(data, status_code=201)

    @router.post("/merges/{id}/undo", summary="Undo a merge", operation_id="undo_merge",
                 responses=responses(404, 409))
    def undo(request: Request, id: int = Path(ge=1, le=MAX_ID)) -> Response:
        kept = crm_of(request).merges.unmerge(id)
        return JSON({"merge_id": id, "kept_id": kept.id})

    return router
