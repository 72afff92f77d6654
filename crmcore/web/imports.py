"""``POST /imports/{kind}``: import an uploaded file as ``crm import`` does.

The file is the raw request body (``Content-Type: text/csv``, a JSON Lines
type or the XLSX type) or the ``file`` part of a ``multipart/form-data`` form.
It is streamed to a private temporary directory in chunks, never held in
memory whole, and refused with ``413`` past the size limit (``[api]
max_upload`` in crm.toml; 64 MiB by default).  Then
the importer of ``crm import`` runs on it (:func:`crmcore.io.import_file`:
authorization ``KIND.import``, validation, visibility, audit, events), with its
options as query parameters, and the directory is removed.

The answer is the import's report: counts, and each rejected row with its
line, column and reason (the first 1000; ``rejected`` counts them all).  With
``on_error=abort`` (the default) one bad row means nothing is written: ``422``
with the same report.  ``report=csv`` answers with the reject file instead (CSV,
the error columns first, then the row as read; correct it and upload it again),
and the counts in ``Import-*`` headers.

Rows are validated in the server process (``workers=0``): forking worker
processes from a threaded web server is unsafe, and the size limit keeps
uploads to what one process validates quickly.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any, Literal

import attrs
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import FileResponse, JSONResponse, Response

from ..domain.errors import ValidationError
from ..io import ImportFailed, ImportOptions, ImportReport, import_file, parse_map_options
from ..io.importer import authorize_import
from ..io.readers import EXTENSIONS, FORMATS
from .auth import protected_router
from .encoding import JSON
from .problems import PROBLEM_JSON, TYPE_BASE, Problem, responses

if TYPE_CHECKING:
    from ..app import CRM

#: Request media types and the importer's format for each.
MEDIA_TYPES = {
    "text/csv": "csv", "application/csv": "csv", "text/tab-separated-values": "csv", "text/plain": "csv",
    "application/x-ndjson": "jsonl", "application/jsonl": "jsonl", "application/x-jsonlines": "jsonl",
    "application/json": "jsonl",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
_UNKNOWN_TYPES = ("application/octet-stream", "")
_SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "xlsx": ".xlsx"}
_UNSAFE = re.compile(r"[^\w. -]+")
Kind = Literal["customers", "contacts", "interactions", "deals"]
_BODY = {"required": True, "content": {**{media: {"schema": {"type": "string", "format": "binary"}}
                                          for media in MEDIA_TYPES},
                                       "multipart/form-data": {"schema": {
                                           "type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}}}}


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the upload is larger than this server's limit of {limit} bytes "
                        "([api] max_upload)", "too-large")


def _safe_name(name: str | None, format: str) -> str:
    """The upload's file name as the report shows it: its last part, harmless characters only."""
    base = _UNSAFE.sub("_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")[:100]
    return base or f"upload{_SUFFIX[format]}"


def _disposition_name(header: str | None) -> str | None:
    match = re.search(r'filename="?([^";]+)"?', header or "")
    return match.group(1) if match else None


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request body in chunks, cut off with 413 past ``limit`` bytes."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        yield chunk


async def _save_body(request: Request, target: FilePath, limit: int) -> None:
    with target.open("wb") as out:
        async for chunk in _limited(request, limit):
            out.write(chunk)


async def _save_multipart(request: Request, target: FilePath, limit: int) -> tuple[str | None, str | None]:
    """The ``file`` part of a form into ``target``; returns its file name and media type."""
    parser = MultiPartParser(request.headers, _limited(request, limit), max_files=1, max_fields=20)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ValidationError.single("file", f"not a readable multipart form: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationError.single("file", "send the file as the form's `file` part")
        with target.open("wb") as out:
            await run_in_threadpool(shutil.copyfileobj, upload.file, out, 1024 * 1024)
        return upload.filename, (upload.content_type or "").split(";")[0].strip().lower()
    finally:
        await form.close()


def _format(given: str | None, media: str | None, name: str | None) -> str:
    """The importer's format: the ``format`` parameter, else the media type, else the name's extension."""
    if given:
        return given
    if media in MEDIA_TYPES:
        return MEDIA_TYPES[media]
    suffix = FilePath(name or "").suffix.lower()
    if media in _UNKNOWN_TYPES and suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    raise Problem(415, f"cannot import {media or 'a body without Content-Type'}: send text/csv, "
                       f"application/x-ndjson or the XLSX type (or give format={'|'.join(FORMATS)})",
                  "unsupported-media-type")


def report_data(report: ImportReport) -> dict[str, Any]:
    """The JSON report of an import: counts and each rejected row (file, line, field, reason)."""
    shown = attrs.evolve(report, reject_file=None)  # the server's temporary path is nobody's business
    data: dict[str, Any] = {name: getattr(report, name) for name in (
        "entity", "file", "format", "key", "on_error", "dry_run", "committed", "rows", "inserted", "updated",
        "unchanged", "rejected", "matched", "skipped", "duplicates", "stopped_early", "notes")}
    data["summary"] = shown.summary()
    data["errors"] = [{"file": report.file, "line": e.line, "field": e.column, "reason": e.reason,
                       "message": e.message(report.file)} for e in report.errors]
    data["errors_truncated"] = report.rejected > len(report.errors)
    return data


def _rejected_problem(request: Request, data: dict[str, Any]) -> JSONResponse:
    """``422``: an all-or-nothing import with bad rows wrote nothing; the problem lists each row."""
    body = {"type": TYPE_BASE + "import-rejected", "title": "Invalid input", "status": 422,
            "detail": data["summary"], "instance": request.url.path,
            "errors": [{"field": e["field"] or "", "pointer": f"line:{e['line']}", "line": e["line"],
                        "detail": e["reason"]} for e in data["errors"]],
            "report": data}
    return JSONResponse(body, status_code=422, media_type=PROBLEM_JSON)


def _count_headers(report: ImportReport) -> dict[str, str]:
    return {f"Import-{name.capitalize()}": str(getattr(report, name)).lower() for name in (
        "rows", "inserted", "updated", "unchanged", "rejected", "committed")}


def imports_router(crm: "CRM") -> APIRouter:
    """The ``/imports`` route."""
    router = protected_router(prefix="/imports", tags=["imports"], responses=responses(401, 403, 422))

    @router.post("/{kind}", operation_id="import_file", openapi_extra={"requestBody": _BODY},
                 summary="Import an uploaded CSV, JSON Lines or XLSX file (as `crm import`)",
                 responses=responses(413, 415))
    async def import_upload(
        request: Request,
        kind: Kind = Path(description="What the file holds."),
        format: Literal["csv", "jsonl", "xlsx"] | None = Query(
            default=None, description="The file's format (default: from Content-Type or the file name)."),
        filename: str | None = Query(default=None, max_length=255, description="The name the report shows."),
        encoding: str | None = Query(default=None, max_length=40, description="CSV/JSONL text encoding "
                                                                           "(default UTF-8; e.g. gb18030)."),
        delimiter: str | None = Query(default=None, min_length=1, max_length=1),
        sheet: str | None = Query(default=None, max_length=100, description="The XLSX sheet (default: first)."),
        maps: list[str] = Query(default=[], alias="map", description="`COLUMN=FIELD` (as `--map`; repeat)."),
        ignore_unknown: bool = Query(default=False, description="Skip columns that match no field."),
        key: Literal["external_id", "email", "id"] | None = Query(
            default=None, description="Match existing records by this field and update them."),
        dry_run: bool = Query(default=False, description="Check every row, write nothing."),
        on_error: Literal["abort", "skip"] = Query(
            default="abort", description="abort: nothing is written if any row is bad; skip: the good rows are."),
        max_errors: int | None = Query(default=None, ge=1, le=2**31 - 1, description="Stop after this many bad rows."),
        raw_csv: bool = Query(default=False, description="Keep a leading ' before =, +, -, @ in cells."),
        earn: bool = Query(default=True, description="Deals: won deals earn loyalty points."),
        allow_duplicates: bool = Query(default=False, description="Deals: add rows without external_id "
                                                                  "even when the same deal is stored."),
        on_duplicate: Literal["skip", "update", "merge", "add"] | None = Query(
            default=None, description="Customers: a new row with a stored customer's exact key is skipped, updates "
                                      "it, fills its empty fields or is added (default: [duplicates] on_import)."),
        report: Literal["json", "csv"] = Query(default="json", description="csv: answer with the reject file."),
    ) -> Response:
        entity = kind.removesuffix("s")
        await run_in_threadpool(authorize_import, crm, entity)  # before a byte is stored
        mapping = parse_map_options(maps)
        limit = crm.config.api.max_upload
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        media: str | None = request.headers.get("content-type", "").split(";")[0].strip().lower()
        workdir = FilePath(tempfile.mkdtemp(prefix="crm-upload-"))
        keep = False
        try:
            (workdir / "in").mkdir()
            received = workdir / "in" / "upload"
            name = filename
            if media == "multipart/form-data":
                part_name, media = await _save_multipart(request, received, limit)
                name = name or part_name
            else:
                name = name or _disposition_name(request.headers.get("content-disposition"))
                await _save_body(request, received, limit)
            chosen = _format(format, media, name)
            path = received.rename(workdir / "in" / _safe_name(name, chosen))
            options = ImportOptions(format=chosen, encoding=encoding, delimiter=delimiter, sheet=sheet,
                                    mapping=mapping, ignore_unknown=ignore_unknown, key=key, dry_run=dry_run,
                                    on_error=on_error, reject_file=workdir / "rejects.csv", workers=0,
                                    max_errors=max_errors, raw_csv=raw_csv, earn=earn,
                                    allow_duplicates=allow_duplicates, on_duplicate=on_duplicate)
            try:
                result = await run_in_threadpool(import_file, crm, entity, path, options)
                failed = False
            except ImportFailed as exc:
                result, failed = exc.report, True
            if report == "csv":
                keep = True  # the response streams the file, then removes the directory
                stem = FilePath(result.file).stem or "upload"
                return FileResponse(workdir / "rejects.csv", status_code=422 if failed else 200,
                                    media_type="text/csv", filename=f"{stem}-rejects.csv",
                                    headers=_count_headers(result),
                                    background=BackgroundTask(shutil.rmtree, workdir, ignore_errors=True))
            data = report_data(result)
            return _rejected_problem(request, data) if failed else JSON(data)
        finally:
            if not keep:
                await run_in_threadpool(shutil.rmtree, workdir, True)

    return router
