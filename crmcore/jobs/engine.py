"""Jobs (:class:`Jobs`): submit, run, list and show background jobs.

A job is a row of the ``jobs`` table (kind, arguments, status, attempts, times, worker, result or
error) written in a unit of work with its audit record.  With a broker configured (``[jobs] broker``
or ``CRM_JOBS_BROKER``) a submitted job's *id* goes to its family's queue and a ``crm worker`` runs
it; without one it runs inline, at once, as before.  Either way :meth:`Jobs.execute` runs it:

1. **claim** in the database: ``queued`` -> ``running`` in one conditional ``UPDATE`` (the row read
   ``FOR UPDATE`` on PostgreSQL and MariaDB).  A job that is ``done`` or ``failed`` is not run again
   (a redelivered message, the same job sent twice); one that is ``running`` is taken over only when
   its worker is gone: a process on this host that no longer exists, or one silent for a whole
   lease (``[jobs] lease``; a running job's worker renews ``heartbeat_at`` every third of it).
2. **run** its kind as the user who submitted it (authorize and visibility apply as they would inline);
3. **record** ``done`` with a result summary, or ``failed`` with the error, and an audit record.

The effects are exactly once because each kind is idempotent over the database (the outbox claims
messages and keys them, the ledger has keys, an import matches by key), not because the queue is.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Connection, func, select, update

from ..application.uow import SYSTEM_ACTOR
from ..domain.convert import json_default
from ..domain.errors import (
    ConfigError,
    CRMError,
    NotAuthorized,
    NotFound,
    ValidationError,
)
from ..store import tables
from ..store.bulk import inserted_id
from ..store.upsert import insert_new
from .heartbeat import Heartbeat
from .kinds import KINDS, QUEUES, JobContext, JobKind

if TYPE_CHECKING:
    from ..app import CRM
    from .broker import Queue

jobs = tables.jobs
STATUSES = ("queued", "running", "done", "failed")
log = logging.getLogger("crmcore.jobs")


def worker_name() -> str:
    """``host:pid`` of this process (the outbox's claim tokens start with it too)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def gone(worker: str | None) -> bool:
    """True if ``worker`` (``host:pid``) is a process of this host that no longer exists."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname()[:40] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # somebody else's process: alive
        return False
    return False


#: Added to the rest of a lease before a busy job is looked at again (clocks of hosts differ a little).
LEASE_MARGIN = timedelta(seconds=1)


@attrs.frozen
class _Busy:
    """A job running under another worker's unexpired lease: ``wait`` until it runs out."""

    queue: str
    worker: str
    wait: timedelta


def _jsonable(value: Any) -> Any:
    """Arguments and results as JSON values (dates as ISO text, as the CLI prints them)."""
    import json

    return json.loads(json.dumps(value, default=json_default))


class Jobs:
    """Background jobs of one CRM: ``Jobs(crm)``; the CLI and the HTTP API share it."""

    def __init__(self, crm: CRM, broker: str | None = None):
        self.crm = crm
        settings = crm.config.jobs
        self.broker_url = broker or settings.broker
        self.prefix = settings.queue_prefix
        self.lease = timedelta(seconds=settings.lease)
        self.batch = settings.batch
        self._queue: Queue | None = None

    # -- submitting ---------------------------------------------------------------------------
    @property
    def background(self) -> bool:
        """True when a broker is configured (jobs go to the queue)."""
        return self.broker_url is not None

    def queue_name(self, kind: JobKind | str) -> str:
        """The broker queue of a kind, or of a family queue name."""
        family = kind.queue if isinstance(kind, JobKind) else kind
        return f"{self.prefix}-{family}"

    def work(self, queues: Sequence[str] | None, concurrency: int, stop: Any,
             started: Callable[[], None] | None = None) -> None:
        """Run jobs from ``queues`` (family names; None: all) until ``stop`` is set (``crm worker``);
        ``started`` is called once the worker may and can run (authorized, broker reached)."""
        self.crm.authorize("job.work", None if queues is None else ",".join(queues))
        queue = self.queue()
        if started is not None:
            started()
        queue.work(None if queues is None else [self.queue_name(q) for q in queues], concurrency, stop)

    def queue(self) -> Queue:
        """The broker adapter (Dramatiq), made on first use."""
        if self._queue is None:
            if self.broker_url is None:
                raise ConfigError("no broker configured: set [jobs] broker in crm.toml or CRM_JOBS_BROKER "
                                  "(amqp://... or redis://...)")
            from .broker import (
                Queue,  # Dramatiq is imported only by processes that use the queue
            )

            self._queue = Queue(self.broker_url, [self.queue_name(q) for q in QUEUES], self.handle)
        return self._queue

    def submit(self, kind: str, args: Mapping[str, Any] | None = None, *, background: bool | None = None,
               run_key: str | None = None) -> dict[str, Any] | None:
        """Record a job; send its id to the queue (``background``, default: when a broker is
        configured) or run it now.  Returns the job's row (finished when run inline).

        ``run_key``: the scheduler's once-per-period key; if a job with that key exists, nothing is
        recorded and None is returned.
        """
        found = self._kind(kind)
        values = dict(args or {})
        found.check(values)
        if background is None:
            background = self.background
        if background and self.broker_url is None:
            self.queue()  # raises the ConfigError naming the settings
        ids = self._record([(found, values)], run_key)
        if not ids:
            return None
        self.dispatch(ids, background)
        return self.get(ids[0])

    def submit_many(self, kind: str, many: Sequence[Mapping[str, Any]], *,
                    background: bool | None = None) -> list[int]:
        """Record several jobs of one kind in one transaction; send or run them.  Returns their ids."""
        found = self._kind(kind)
        for args in many:
            found.check(args)
        background = self.background if background is None else background
        if background:
            self.queue()
        ids = self._record([(found, dict(args)) for args in many], None)
        self.dispatch(ids, background)
        return ids

    def dispatch(self, ids: Sequence[int], background: bool) -> None:
        """Send recorded jobs' ids to their queues, or run them here."""
        if not background:
            for job_id in ids:
                self.execute(job_id)
            return
        with self.crm.unit(readonly=True) as uow:
            queues = dict(uow.conn.execute(select(jobs.c.id, jobs.c.queue).where(jobs.c.id.in_(ids))).all())
        queue = self.queue()
        for job_id in ids:
            queue.send(queues[job_id], job_id)

    def _kind(self, kind: str) -> JobKind:
        found = KINDS.get(kind)
        if found is None:
            raise ValidationError.single("kind", f"unknown job kind {kind!r}; known: {', '.join(sorted(KINDS))}",
                                         "job")
        return found

    def _record(self, many: Sequence[tuple[JobKind, dict[str, Any]]], run_key: str | None) -> list[int]:
        ids: list[int] = []
        with self.crm.unit() as uow:
            for kind, args in many:
                self.crm.authorize("job.submit", kind.name)
                if kind.action is not None:  # the use case's own permission, asked again when it runs
                    self.crm.authorize(kind.action, args.get(kind.resource) if kind.resource else None)
                if kind.authorize is not None:
                    kind.authorize(self.crm, args)
                values = {"kind": kind.name, "args": _jsonable(args), "queue": self.queue_name(kind),
                          "status": "queued", "actor": self.crm.actor, "attempts": 0, "enqueued_at": uow.now,
                          "run_key": run_key}
                if run_key is not None:
                    new_id = insert_new(uow.conn, jobs, values, jobs.c.run_key)
                    if new_id is None:
                        return []  # another scheduler recorded this period's run first
                    job_id = new_id
                else:
                    job_id = inserted_id(uow.conn.execute(jobs.insert().values(values)))
                uow.audit.record("job.submit", "job", job_id, values=values)
                ids.append(job_id)
        return ids

    # -- running --------------------------------------------------------------------------------
    def handle(self, job_id: int) -> None:
        """A queue message for ``job_id`` (what ``crm worker`` runs): :meth:`execute`; a job that is
        running on another host is looked at again when that worker's lease runs out.

        A worker on a host that died leaves its messages unacknowledged and the broker hands them
        to the living workers at once, while the job's lease still says "running" (a dead process
        is seen at once only on its own host).  Acknowledging such a message would leave the job
        to nobody; sending its id again, delayed until the lease ends, has it taken over then (or
        skipped, if the other worker was alive and finished it).
        """
        outcome = self._execute(job_id)
        if isinstance(outcome, _Busy):
            log.info("job %s runs on %s; looking again in %.0f s", job_id, outcome.worker, outcome.wait.total_seconds())
            self.queue().send(outcome.queue, job_id, delay=outcome.wait)

    def execute(self, job_id: int) -> str:
        """Run job ``job_id`` if nobody else is running it; returns its status afterwards
        (``skipped`` when it was done, failed or running elsewhere)."""
        outcome = self._execute(job_id)
        return "skipped" if isinstance(outcome, _Busy) else outcome

    def _execute(self, job_id: int) -> str | _Busy:
        claimed = self._claim(job_id)
        if claimed is None:
            return "skipped"
        if isinstance(claimed, _Busy):
            return claimed
        row, dead = claimed
        kind = KINDS[row.kind]
        context = JobContext(job_id, dead)
        try:
            with Heartbeat(self.crm, job_id, worker_name(), self.lease), \
                    nullcontext() if row.actor == SYSTEM_ACTOR else self.crm.acting(row.actor):
                result = kind.run(self.crm, row.args, context)
        except CRMError as exc:  # the user's error (bad arguments, not authorized): recorded, not retried
            self._finish(row.id, "failed", error=f"{type(exc).__name__}: {exc}")
            return "failed"
        except Exception as exc:
            log.exception("job %s (%s) failed", row.id, row.kind)
            self._finish(row.id, "failed", error=f"{type(exc).__name__}: {exc}")
            return "failed"
        self._finish(row.id, "done", result=result)
        return "done"

    def _claim(self, job_id: int) -> tuple[Any, tuple[str, ...]] | _Busy | None:
        me = worker_name()

        def work(conn: Connection) -> tuple[Any, tuple[str, ...]] | _Busy | None:
            query = select(jobs).where(jobs.c.id == job_id)
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                raise NotFound("job", job_id)
            now = self.crm.clock()
            if row.status in ("done", "failed"):
                return None
            dead: tuple[str, ...] = ()
            if row.status == "running":
                seen = max((t for t in (row.started_at, row.heartbeat_at) if t is not None), default=None)
                if seen is not None and seen >= now - self.lease and not gone(row.worker):
                    if row.worker == me:
                        return None  # this very process runs it (the same id sent twice)
                    return _Busy(row.queue, row.worker, seen + self.lease - now + LEASE_MARGIN)
                # Gone (its process no longer exists) or silent past its lease: presumed dead, so its
                # outbox claims are released now too (the claim lease may be longer than the job's).
                dead = (row.worker,)
                log.warning("job %s: taking over from %s", job_id, row.worker)
            taken = conn.execute(update(jobs).where(
                jobs.c.id == job_id, jobs.c.status == row.status, jobs.c.attempts == row.attempts).values(
                status="running", attempts=row.attempts + 1, started_at=now, heartbeat_at=now, worker=me)).rowcount
            return (row, dead) if taken else None

        return self.crm.notify._write(work)

    def _finish(self, job_id: int, status: str, *, result: Any = None, error: str | None = None) -> None:
        with self.crm.unit() as uow:
            values = {"status": status, "finished_at": uow.now, "error": error,
                      "result": None if result is None else _jsonable(result)}
            uow.conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.worker == worker_name()).values(values))
            uow.audit.record(f"job.{status}", "job", job_id, values=values)

    # -- the outbox relay -----------------------------------------------------------------------
    def relay(self, as_of: datetime | None = None, channel: str | None = None, *,
              background: bool | None = None) -> list[int]:
        """Hand the ids of due outbox messages to the queue, ``[jobs] batch`` per delivery job;
        returns the job ids.  Handing an id twice is harmless: a delivery job claims its messages
        in the outbox and skips those another has taken or sent."""
        self.crm.authorize("notify.dispatch", channel)
        outbox = tables.notify_outbox
        now = as_of or self.crm.clock()
        query = select(outbox.c.id).where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now) \
            .order_by(outbox.c.id)
        if channel:
            query = query.where(outbox.c.channel == channel)
        with self.crm.unit(readonly=True) as uow:
            due = list(uow.conn.execute(query).scalars())
        batches = [{"ids": due[i:i + self.batch]} for i in range(0, len(due), self.batch)]
        return self.submit_many("notify.deliver", batches, background=background) if batches else []

    # -- reading ----------------------------------------------------------------------------------
    def list(self, status: str | None = None, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Jobs, newest first: every job for those allowed ``job.read_all``, else the actor's own."""
        self.crm.authorize("job.list", None)
        if status is not None and status not in STATUSES:
            raise ValidationError.single("status", f"must be one of {', '.join(STATUSES)}", "job")
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if status:
            query = query.where(jobs.c.status == status)
        if kind:
            query = query.where(jobs.c.kind == kind)
        if not self._sees_all():
            query = query.where(jobs.c.actor == self.crm.actor)
        with self.crm.unit(readonly=True) as uow:
            return [dict(r._mapping) for r in uow.conn.execute(query)]

    def get(self, job_id: int) -> dict[str, Any]:
        """One job (NotFound also for another user's job, unless allowed ``job.read_all``)."""
        self.crm.authorize("job.read", job_id)
        query = select(jobs).where(jobs.c.id == job_id)
        if not self._sees_all():
            query = query.where(jobs.c.actor == self.crm.actor)
        with self.crm.unit(readonly=True) as uow:
            row = uow.conn.execute(query).first()
        if row is None:
            raise NotFound("job", job_id)
        return dict(row._mapping)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        self.crm.authorize("job.list", None)
        with self.crm.unit(readonly=True) as uow:
            return dict(uow.conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())

    def _sees_all(self) -> bool:
        try:
            self.crm.authorize("job.read_all", None)
        except NotAuthorized:
            return False
        return True
