"""The job kinds: what a job of each kind does, given the CRM and the job's arguments.

A job's arguments are ids and plain values (a strategy name, a date, a file path), never state:
the worker reads everything else from the database when it runs, and each kind is safe to run
twice (the outbox claims its messages, the ledger has keys, a segment run writes a new run record,
an import matches rows by key).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..domain.errors import CRMError, ValidationError

if TYPE_CHECKING:
    from ..app import CRM

#: The family queues; a worker consumes some or all of them (``crm worker --queues``).
QUEUES = ("notify", "segments", "loyalty", "reports", "imports")


@attrs.frozen
class JobContext:
    """What a job knows about its own run besides its arguments.

    :ivar job_id: the job's id.
    :ivar dead: ``host:pid`` of workers known to have died running this job before (their
        outbox claims are released at once).
    """

    job_id: int
    dead: tuple[str, ...] = ()


@attrs.frozen
class JobKind:
    """A kind of job.

    :ivar name: ``family.action`` (``segments.run``).
    :ivar queue: the family queue it goes to (one of :data:`QUEUES`).
    :ivar run: ``run(crm, args, context) -> summary`` (a small JSON-able dict).
    :ivar required: argument names that must be present.
    :ivar action: the permission the job's use case asks (``segment.run``); asked when the job is
        submitted too, so a user who may not run it gets the refusal at once, not a failed job.
    :ivar resource: the argument naming the resource of ``action`` (None: no resource).
    :ivar authorize: ``authorize(crm, args)`` for a permission that depends on the arguments (an
        import asks ``ENTITY.import``); asked at submission as ``action`` is.
    """

    name: str
    queue: str
    run: Callable[[CRM, Mapping[str, Any], JobContext], dict[str, Any]]
    required: tuple[str, ...] = ()
    action: str | None = None
    resource: str | None = None
    authorize: Callable[[CRM, Mapping[str, Any]], None] | None = None

    def check(self, args: Mapping[str, Any]) -> None:
        """A ValidationError naming a missing argument."""
        for name in self.required:
            if args.get(name) in (None, ""):
                raise ValidationError.single(name, "is required", f"job {self.name}")


def _deliver(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    ids = [int(i) for i in args["ids"]]
    result = crm.notify.dispatch(ids=ids, dead=ctx.dead)
    return attrs.asdict(result)


def _run_scheduled(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"enqueued": crm.messages.run_scheduled(args.get("as_of"))}


def _segment_run(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    run = crm.segments.run(args["strategy"], as_of=args.get("as_of"), options=args.get("options") or None)
    return {"run_id": run.id, "members": run.members, "entered": run.entered, "left": run.left,
            "moved": run.moved, "counts": dict(run.counts or {})}


def _loyalty_expire(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"expired_entries": crm.loyalty.expire(as_of=args.get("as_of"), scheme=args.get("scheme"))}


def _loyalty_run(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"changes": crm.loyalty.run(as_of=args.get("as_of"), scheme=args.get("scheme"))}


def _loyalty_earn(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"entries": crm.loyalty.earn_won_deals(as_of=args.get("as_of"), scheme=args.get("scheme"))}


def _report_write(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    path = crm.reports.write(args["name"], args["output"], args.get("format") or "table", args.get("as_of"),
                             args.get("options") or None)
    return {"output": str(path)}


def _report_scheduled(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    """A scheduled report's run for one period: rendered once, written to its file (whole, by
    rename) and/or queued on its channel with the key ``report:SCHEDULE:PERIOD`` (so a job taken
    over or run twice sends it once)."""
    name, period = args["name"], args["period"]
    rendered = crm.reports.render(name, args.get("format") or "csv", args.get("as_of"), args.get("options") or None)
    summary: dict[str, Any] = {"report": name, "period": period}
    if args.get("output"):
        summary["output"] = str(_write_whole(Path(args["output"]), rendered))
    if args.get("channel"):
        if isinstance(rendered, bytes):
            raise ValidationError.single("format", f"{args.get('format')!r} renders bytes; a channel sends text "
                                                   "(csv, table, json, markdown)", f"scheduled report {name}")
        with crm.unit() as uow:
            summary["message"] = uow.outbox.enqueue(
                args["channel"], recipient=args["to"], subject=f"Report {name} {period}", body=rendered,
                key=f"report:{args.get('schedule') or name}:{period}")
    return summary


def _write_whole(path: Path, rendered: str | bytes) -> Path:
    """Write to ``PATH.part`` and rename: a reader never sees half a report."""
    from ..reports.dashboard import write_output

    part = write_output(path.with_name(path.name + ".part"), rendered)
    try:
        os.replace(part, path)
    except OSError as exc:
        raise CRMError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _authorize_import(crm: CRM, args: Mapping[str, Any]) -> None:
    from ..io.importer import authorize_import

    authorize_import(crm, str(args["entity"]))


def _import(crm: CRM, args: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    from ..io.importer import (  # the import machinery only where it runs
        ImportOptions,
        import_file,
    )

    options = ImportOptions(**dict(args.get("options") or {}))
    return import_file(crm, args["entity"], args["path"], options).to_dict()


KINDS: dict[str, JobKind] = {kind.name: kind for kind in (
    JobKind("notify.deliver", "notify", _deliver, ("ids",), "notify.dispatch"),
    JobKind("notify.run_scheduled", "notify", _run_scheduled, (), "notify.run_scheduled"),
    JobKind("segments.run", "segments", _segment_run, ("strategy",), "segment.run", "strategy"),
    JobKind("loyalty.expire", "loyalty", _loyalty_expire, (), "loyalty.expire", "scheme"),
    JobKind("loyalty.run", "loyalty", _loyalty_run, (), "loyalty.run", "scheme"),
    JobKind("loyalty.earn", "loyalty", _loyalty_earn, (), "loyalty.earn"),
    JobKind("reports.write", "reports", _report_write, ("name", "output"), "report.run", "name"),
    JobKind("reports.scheduled", "reports", _report_scheduled, ("name", "period"), "report.run", "name"),
    JobKind("import", "imports", _import, ("entity", "path"), authorize=_authorize_import),
)}
"""Every job kind by name."""
