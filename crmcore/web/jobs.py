"""Background jobs over HTTP: ``GET /jobs`` and ``GET /jobs/{id}`` (crmcore.jobs).

A route that can run in the background (``POST /segments/{strategy}/runs?background=true``)
answers ``202 Accepted`` with ``Location: /jobs/{id}``; the job's record tells its status, and
its result once done.  Without a broker the job has run inline by the time the answer comes.
Every route calls :class:`crmcore.jobs.Jobs`, which authorizes (``job.list``, ``job.read``)
and shows a user their own jobs only unless ``job.read_all`` is allowed.
"""

import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from ..jobs import STATUSES, Jobs
from .auth import crm_of, protected_router
from .encoding import JSON, dumps
from .problems import responses

if TYPE_CHECKING:
    from ..app import CRM

MAX_ID = 2**31 - 1


def job_record(row: dict[str, Any]) -> dict[str, Any]:
    """A job row as JSON data (times ISO 8601 UTC)."""
    data: dict[str, Any] = json.loads(dumps(row))
    return data


def accepted(job: dict[str, Any]) -> Response:
    """``202 Accepted`` with the job and ``Location: /jobs/{id}``."""
    return JSON(job_record(job), status_code=202, headers={"Location": f"/jobs/{job['id']}"})


def jobs_router(crm: "CRM") -> APIRouter:
    """``/jobs``: list and read background jobs."""
    router = protected_router(prefix="/jobs", tags=["jobs"], responses=responses(401, 403, 422))

    @router.get("", summary="List background jobs, newest first", operation_id="list_jobs")
    def list_jobs(request: Request,
                  status: str | None = Query(default=None, pattern="^(" + "|".join(STATUSES) + ")$"),
                  kind: str | None = Query(default=None, max_length=64),
                  limit: int = Query(default=50, ge=1, le=1000)) -> Response:
        return JSON([job_record(r) for r in Jobs(crm_of(request)).list(status=status, kind=kind, limit=limit)])

    @router.get("/{id}", summary="A background job: status, attempts, times, result or error",
                operation_id="get_job", responses=responses(404))
    def get_job(request: Request, id: int = Path(description="The job's id.", ge=1, le=MAX_ID)) -> Response:
        return JSON(job_record(Jobs(crm_of(request)).get(id)))

    return router
