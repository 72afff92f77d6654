"""Reports over HTTP: the catalog, and each report in every format.

Generated from the report and renderer registries when the app is built:
each report gets ``GET /reports/{name}`` whose query parameters are its typed
options (from its ``options_type``) plus ``format`` and ``as_of``, so a
plugin's new report (or format) is renderable, and documented in
``/openapi.json``, with no HTTP code of its own.  An unknown query parameter
is a 422 naming it (a misspelt filter must not quietly widen a report).

- ``GET /reports``: name, description and options schema of each report; the formats.
- ``GET /reports/{name}?format=json|csv|xlsx|html|...&as_of=&OPTION=...``: the rendered report
  with its media type and a ``Content-Disposition`` filename.  Without ``format`` the ``Accept``
  header chooses (``text/csv``, ``text/html``, the XLSX type, ...; default JSON).

Every route calls ``crm.reports``: the engine authorizes (``report.list``, ``report.run``) and
the report's queries see only the records the user may (record visibility).
"""

import json
import mimetypes
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.responses import Response

from ..domain.errors import ValidationError
from ..reports import Renderer, Report
from .auth import crm_of, protected_router
from .components import AS_OF_TEXT, as_of_value, model_name, options_fields, options_schema, structured_names, \
    typed_options
from .encoding import JSON
from .problems import Problem, responses

if TYPE_CHECKING:
    from ..app import CRM

#: Media types of the formats the core and the first-party plugins render.
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "csv-raw": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "table": "text/plain; charset=utf-8",
}
#: The query parameters every report route has besides the report's options.
RESERVED = ("format", "as_of")
#: Formats a browser shows rather than downloads.
_INLINE = ("json", "html")


def media_type(renderer: Renderer) -> str:
    """The Content-Type of a format: known ones by name, others by file extension."""
    if renderer.name in MEDIA_TYPES:
        return MEDIA_TYPES[renderer.name]
    guessed = mimetypes.guess_type(f"report.{renderer.extension}")[0]
    if guessed is None:
        return "application/octet-stream"
    return guessed + ("; charset=utf-8" if guessed.startswith("text/") else "")


def negotiate(accept: str | None, renderers: dict[str, Renderer]) -> str:
    """The format an ``Accept`` header asks for (JSON for none or ``*/*``); 406 when none is rendered."""
    if not accept or not accept.strip():
        return "json"
    wanted: list[tuple[float, int, str]] = []
    for n, part in enumerate(accept.split(",")):
        kind, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if kind and q > 0:
            wanted.append((-q, n, kind.lower()))
    by_type: dict[str, str] = {}
    for name, renderer in renderers.items():
        by_type.setdefault(media_type(renderer).split(";")[0], name)
    by_type["application/json"] = "json"
    for _q, _n, kind in sorted(wanted):
        if kind in ("*/*", "application/*", "application/problem+json"):
            return "json"
        if kind in by_type and by_type[kind] in renderers:
            return by_type[kind]
        if kind.endswith("/*"):
            for media, name in by_type.items():
                if media.startswith(kind[:-1]):
                    return name
    raise Problem(406, f"no format of this report is {accept!r}; formats: {', '.join(renderers)} "
                       "(or send ?format=)", "not-acceptable")


def reports_router(crm: "CRM") -> APIRouter:
    """``/reports``: the catalog and a route per registered report (built from the registries)."""
    router = protected_router(prefix="/reports", tags=["reports"], responses=responses(401, 403, 422))
    renderers = {r.name: r for r in crm.reports.renderers}
    queries = {r.name: _query_model(crm, r, tuple(renderers)) for r in crm.reports.registry}

    @router.get("", summary="List reports, their options and the formats", operation_id="list_reports")
    def catalog(request: Request) -> Response:
        found = crm_of(request).reports.list()
        return JSON({
            "reports": [{"name": r.name, "description": r.description, "path": f"/reports/{r.name}",
                         "options": _options_schema(queries[r.name]) if r.name in queries else None}
                        for r in found],
            "formats": [{"name": r.name, "media_type": media_type(r), "extension": r.extension,
                         "description": r.description} for r in renderers.values()],
        })

    for report in crm.reports.registry:
        _report_route(router, report, queries[report.name], renderers)

    @router.get("/{name}", include_in_schema=False)
    def unknown(request: Request, name: str) -> Response:
        crm_of(request).reports.registry.get(name)  # UnknownComponent (404) naming the reports
        raise AssertionError("every registered report has its own route")  # pragma: no cover

    return router


def _query_model(crm: "CRM", report: Report, formats: tuple[str, ...]) -> type[BaseModel]:
    """The query parameters of one report: ``format``, ``as_of`` and its options (others refused)."""
    fields = {k: v for k, v in options_fields(report, "reports", crm.config, in_query=True).items()
              if k not in RESERVED}
    format_type: Any = Literal[formats] | None
    return create_model(
        model_name("report", report.name, "Query"), __config__=ConfigDict(extra="forbid"),
        format=(format_type, Field(default=None, description=
                "The output format (default: from the Accept header, else json).")),
        as_of=(str | None, Field(default=None, max_length=40, description=AS_OF_TEXT)),
        **fields)


def _options_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = options_schema(model)
    for name in RESERVED:
        schema.get("properties", {}).pop(name, None)
    return schema


def _report_route(router: APIRouter, report: Report, model: type[BaseModel], renderers: dict[str, Renderer]) -> None:
    """``GET /reports/{name}`` with ``name``'s options as query parameters."""
    name = report.name
    structured = structured_names(report)

    def run(request: Request, query: Annotated[model, Query()]) -> Response:  # type: ignore[valid-type]
        crm = crm_of(request)
        sent: dict[str, Any] = query.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
        fmt = sent.pop("format", None) or negotiate(request.headers.get("accept"), renderers)
        as_of = as_of_value(crm, sent.pop("as_of", None))
        for key in structured & set(sent):
            sent[key] = _json_option(key, sent[key])
        typed = typed_options(crm.reports.registry.get(name), "reports", crm.config, sent)
        rendered = crm.reports.render(name, format=fmt, as_of=as_of, options=typed)
        renderer = renderers[fmt]
        moment = as_of or crm.as_of(None)
        filename = f"{name}-{moment:%Y-%m-%d}.{renderer.extension}"
        disposition = "inline" if fmt in _INLINE else "attachment"
        return Response(rendered, media_type=media_type(renderer),
                        headers={"Content-Disposition": f'{disposition}; filename="{filename}"'})

    content: dict[str, Any] = {media_type(r).split(";")[0]: {} for r in renderers.values()}
    router.add_api_route(f"/{name}", run, methods=["GET"],
                         summary=f"Report {name!r}: {report.description}" if report.description else f"Report {name!r}",
                         operation_id=f"report_{name.replace('-', '_')}",
                         responses={200: {"description": "The rendered report", "content": content},
                                    **responses(404, 406)})


def _json_option(key: str, text: Any) -> Any:
    """A structured option sent as JSON text in the query."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise ValidationError.single(key, "not JSON text (a structured option is sent as JSON)") from None
