"""Segmentation over HTTP: strategies, runs, members and explanations.

Generated from the segmenter registry when the app is built: each strategy
gets ``POST /segments/{strategy}/runs`` whose body is that strategy's typed
options (from its ``options_type``), so a plugin's new segmenter is runnable,
and documented in ``/openapi.json``, with no HTTP code of its own.

- ``GET /segments/strategies``: name, description and options schema of each.
- ``POST /segments/{strategy}/runs?as_of=``: body = options (what is left out keeps its
  ``[segments.NAME]`` value).  The run is synchronous, as in the engine: the answer (``201``,
  ``Location: /segments/runs/{id}``) comes when the memberships are stored.  With
  ``background=true`` the run is a job (crmcore.jobs): ``202`` with ``Location: /jobs/{id}``.
- ``GET /segments/runs`` (``strategy``, ``limit``), ``GET /segments/runs/{id}``: the run records.
- ``GET /segments/{strategy}/members`` (``segment``, ``run_id``, ``after``, ``limit``): keyset
  pages in customer id order, pinned to one run; ``next`` links the following page.
- ``GET /segments/{strategy}/explain/{customer_id}`` (``run_id``).

Every route calls ``crm.segments``: the engine authorizes (``segment.strategies``, ``segment.run``,
``segment.runs``, ``segment.members``, ``segment.explain``), record visibility limits members
to the customers the user may see, and a run is audited.
"""

import json
from typing import TYPE_CHECKING, Any

import attrs
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from ..jobs import Jobs
from ..segments import SegmentRun, Segmenter
from .auth import crm_of, protected_router
from .components import AS_OF_TEXT, as_of_value, options_model, options_schema, typed_options
from .encoding import JSON, dumps
from .jobs import accepted
from .problems import responses

if TYPE_CHECKING:
    from ..app import CRM

BACKGROUND_TEXT = ("Run as a background job: 202 with Location /jobs/{id} (queued for `crm worker` when a "
                   "broker is configured, else run before the answer).")
#: The most members (or runs) one page holds.
MAX_PAGE = 1000
MAX_ID = 2**31 - 1


def run_record(run: SegmentRun) -> dict[str, Any]:
    """A run record as JSON data (times ISO 8601 UTC)."""
    data: dict[str, Any] = json.loads(dumps(attrs.asdict(run)))
    return data


def segments_router(crm: "CRM") -> APIRouter:
    """``/segments``: the routes of every registered strategy (built from the registry)."""
    router = protected_router(prefix="/segments", tags=["segments"], responses=responses(401, 403, 422))
    models = {s.name: options_model(s, "segments", crm.config) for s in crm.segments.registry}

    @router.get("/strategies", summary="List segmentation strategies and their options",
                operation_id="list_segment_strategies")
    def strategies(request: Request) -> Response:
        found = crm_of(request).segments.strategies()
        return JSON([{"name": s.name, "description": s.description,
                      "options": options_schema(models[s.name]) if s.name in models else None} for s in found])

    for segmenter in crm.segments.registry:
        _run_route(router, segmenter, models[segmenter.name])

    @router.post("/{strategy}/runs", include_in_schema=False, status_code=201)
    def run_unknown(request: Request, strategy: str) -> Response:
        crm_of(request).segments.registry.get(strategy)  # UnknownComponent (404) naming the strategies
        raise AssertionError("every registered strategy has its own route")  # pragma: no cover

    @router.get("/runs", summary="List segment runs, newest first", operation_id="list_segment_runs")
    def list_runs(request: Request,
                  strategy: str | None = Query(default=None, max_length=100, description="Only this strategy's."),
                  limit: int = Query(default=50, ge=1, le=MAX_PAGE)) -> Response:
        return JSON([run_record(r) for r in crm_of(request).segments.runs(strategy, limit)])

    @router.get("/runs/{id}", summary="A segment run (its counts once done)", operation_id="get_segment_run",
                responses=responses(404))
    def get_run(request: Request, id: int = Path(description="The run's id.", ge=1, le=MAX_ID)) -> Response:
        return JSON(run_record(crm_of(request).segments.run_info(id)))

    @router.get("/{strategy}/members", summary="Members of a strategy's run (keyset pages by customer id)",
                operation_id="list_segment_members", responses=responses(404))
    def members(
        request: Request, strategy: str = Path(max_length=100),
        segment: str | None = Query(default=None, max_length=200, description="Only this segment."),
        run_id: int | None = Query(default=None, ge=1, le=MAX_ID, description="A specific run (default: the latest)."),
        after: int | None = Query(default=None, ge=0, le=2**31 - 1,
                                  description="Members with a greater customer id (from `next`)."),
        limit: int = Query(default=100, ge=1, le=MAX_PAGE),
    ) -> Response:
        engine = crm_of(request).segments
        engine.registry.get(strategy)
        rows = engine.iter_members(strategy, segment, run_id, customer_fields=True, after=after, limit=limit + 1)
        if run_id is None:  # pin the run, so the pages of one listing come from one run
            latest = engine.latest_run(strategy)
            run_id = latest.id if latest is not None else None
            if run_id is None:
                return JSON({"strategy": strategy, "run_id": None, "items": [], "next": None})
            rows = engine.iter_members(strategy, segment, run_id, customer_fields=True, after=after,
                                       limit=limit + 1)
        items = list(rows)
        more, items = len(items) > limit, items[:limit]
        body: dict[str, Any] = {"strategy": strategy, "run_id": run_id, "items": items, "next": None}
        headers = {}
        if more:
            body["next"] = str(request.url.include_query_params(run_id=run_id, after=items[-1]["customer_id"]))
            headers["Link"] = f'<{body["next"]}>; rel="next"'
        return JSON(body, headers=headers)

    @router.get("/{strategy}/explain/{customer_id}", summary="Why a customer is in their segment",
                operation_id="explain_segment", responses=responses(404))
    def explain(request: Request, strategy: str = Path(max_length=100),
                customer_id: int = Path(description="The customer's id.", ge=1, le=MAX_ID),
                run_id: int | None = Query(default=None, ge=1, le=MAX_ID,
                                           description="A specific run (default: the latest).")) -> Response:
        return JSON(crm_of(request).segments.explain(strategy, customer_id, run_id))

    return router


def _run_route(router: APIRouter, segmenter: Segmenter, model: type[BaseModel]) -> None:
    """``POST /segments/{name}/runs`` with ``name``'s options as the body."""
    name = segmenter.name

    def run(request: Request,
            options: model | None = Body(default=None, description=  # type: ignore[valid-type]
                                         f"Options of {name!r}; what is left out keeps its configured value."),
            as_of: str | None = Query(default=None, max_length=40, description=AS_OF_TEXT),
            background: bool = Query(default=False, description=BACKGROUND_TEXT)) -> Response:
        crm = crm_of(request)
        given: dict[str, Any] = options.model_dump(exclude_unset=True) if options is not None else {}
        typed = typed_options(crm.segments.registry.get(name), "segments", crm.config, given)
        if background:
            as_of_value(crm, as_of)  # a bad date is a 422 now, not a failed job later
            job = Jobs(crm).submit("segments.run", {"strategy": name, "as_of": as_of, "options": given})
            assert job is not None
            return accepted(job)
        done = crm.segments.run(name, as_of=as_of_value(crm, as_of), options=typed)
        return JSON(run_record(done), status_code=201, headers={"Location": f"/segments/runs/{done.id}"})

    router.add_api_route(f"/{name}/runs", run, methods=["POST"], status_code=201,
                         summary=f"Run {name!r}: {segmenter.description}" if segmenter.description else f"Run {name!r}",
                         operation_id=f"run_segments_{name.replace('-', '_')}",
                         responses={**responses(404), 202: {"description": "Accepted as a background job (Location: the job)"}})
