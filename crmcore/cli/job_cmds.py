"""``crm jobs``, ``crm worker``, ``crm scheduler``: background jobs (crmcore.jobs)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from ..jobs import QUEUES, STATUSES, Jobs
from .context import Session, pass_session, read_only
from .params import COUNT, ID, POSITIVE, one_more

JOB_COLUMNS = ["id", "kind", "status", "actor", "attempts", "enqueued_at", "started_at", "finished_at", "error"]

BACKGROUND = click.option("--background", is_flag=True,
                          help="Enqueue as a job for `crm worker` (needs [jobs] broker) instead of running now.")


def submit_background(session: Session, kind: str, args: dict[str, Any]) -> None:
    """Enqueue a job of ``kind`` and print its id (the ``--background`` of a command)."""
    job = Jobs(session.crm).submit(kind, args, background=True)
    assert job is not None
    session.emit_one({"job": job["id"], "kind": kind, "status": job["status"], "queue": job["queue"]})


@click.group("jobs")
def jobs_group() -> None:
    """Background jobs: list and show (run by `crm worker`, or inline without a broker)."""


@read_only
@jobs_group.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--kind", help="Only jobs of this kind (segments.run, notify.deliver, ...).")
@click.option("--limit", type=COUNT, default=50, show_default=True)
@pass_session
def list_jobs(session: Session, status: str | None, kind: str | None, limit: int) -> None:
    """Jobs, newest first."""
    rows = Jobs(session.crm).list(status=status, kind=kind, limit=one_more(limit))
    session.emit(rows[:limit], columns=None if session.as_json else JOB_COLUMNS)
    if len(rows) > limit:
        session.showing(limit, None, "--limit")


@read_only
@jobs_group.command("show")
@click.argument("job_id", type=ID)
@pass_session
def show_job(session: Session, job_id: int) -> None:
    """One job: arguments, status, attempts, times, result or error."""
    job = Jobs(session.crm).get(job_id)
    if session.as_json:
        session.emit_object(job)
    else:
        session.emit_fields(job, title=f"job {job_id}")


def _stopping() -> tuple[threading.Event, dict[signal.Signals, Any]]:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    return stop, previous


@click.command("worker")
@click.option("--broker", metavar="URL", help="amqp://... or redis://... (default: [jobs] broker, CRM_JOBS_BROKER).")
@click.option("--queues", metavar="A,B", help=f"Only these family queues ({', '.join(QUEUES)}; default all).")
@click.option("--concurrency", type=POSITIVE, default=4, show_default=True, help="Threads running jobs.")
@pass_session
def worker(session: Session, broker: str | None, queues: str | None, concurrency: int) -> None:
    """Run jobs from the queue until SIGTERM or Ctrl-C (the jobs in hand are finished first)."""
    jobs = Jobs(session.crm, broker=broker)
    wanted = None
    if queues:
        wanted = [q.strip() for q in queues.split(",") if q.strip()]
        unknown = [q for q in wanted if q not in QUEUES]
        if unknown:
            raise click.BadParameter(f"unknown queue(s) {', '.join(unknown)}; known: {', '.join(QUEUES)}",
                                     param_hint="--queues")
    stop, previous = _stopping()
    try:
        def started() -> None:
            if not session.quiet:
                click.echo(f"worker started ({concurrency} thread(s), queues "
                           f"{', '.join(jobs.queue_name(q) for q in wanted or QUEUES)}); SIGTERM or Ctrl-C stops it",
                           err=True)

        jobs.work(wanted, concurrency, stop, started)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    session.echo("worker stopped")


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Fire this period's jobs once and exit (for cron and tests).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds between checks for a new day.")
@pass_session
def scheduler(session: Session, once: bool, interval: float) -> None:
    """Fire the daily jobs (birthday greetings, points expiry, tier evaluation) once per day and the
    scheduled reports ([jobs.reports.NAME]) once per period, however many schedulers run (--as-of
    picks the moment)."""
    from ..jobs.scheduler import fire

    jobs = Jobs(session.crm)
    if once:
        session.emit(fire(jobs, session.as_of))
        return
    stop, previous = _stopping()
    try:
        while not stop.is_set():
            for row in fire(jobs, session.crm.as_of(session.as_of_text) if session.as_of_text else session.crm.clock()):
                if row["fired"] and not session.quiet:
                    click.echo(f"fired {row['job']} for {row['period']}: job {row['id']}", err=True)
            stop.wait(interval)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
