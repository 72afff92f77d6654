"""``crm notify``: list and run what plugins registered in the notify family."""

from __future__ import annotations

import signal
import threading
from typing import Any

import attrs
import click

from ..jobs import Jobs
from ..notify import STATUSES, DispatchResult
from .context import Session, pass_session, read_only
from .entities import resolve_customer
from .params import COUNT, ID, POSITIVE, one_more
from .family_common import component_rows
from .job_cmds import BACKGROUND

OUTBOX_COLUMNS = ["id", "channel", "recipient", "purpose", "status", "attempts", "next_attempt_at", "sent_at",
                  "provider_id", "subject", "last_error"]


@click.group("notify")
def notify() -> None:
    """Notifications: channels, outbox, dispatch, worker, retry."""


@read_only
@notify.command("channels")
@pass_session
def channels(session: Session) -> None:
    """List notification channels."""
    session.emit(component_rows(session.crm.notify.channels()))


@notify.command("send")
@click.option("--channel", required=True)
@click.option("--customer", help="Customer id, external id or email (the recipient defaults to their address).")
@click.option("--to", "recipient", help="Recipient address, overriding the customer's.")
@click.option("--subject")
@click.option("--body")
@click.option("--purpose", type=click.Choice(["transactional", "marketing"]), default="transactional")
@click.option("--key", help="Idempotency key (a repeat is ignored).")
@pass_session
def send(session: Session, channel: str, customer: str | None, recipient: str | None, subject: str | None,
         body: str | None, purpose: str, key: str | None) -> None:
    """Queue one message (delivered by `crm notify dispatch`)."""
    cid = resolve_customer(session, customer) if customer else None
    mid = session.crm.notify.enqueue(channel, customer_id=cid, recipient=recipient, subject=subject, body=body,
                                     purpose=purpose, key=key)
    message = session.crm.notify.outbox(limit=1, message_id=mid)[0]
    session.emit_one(message, columns=["id", "channel", "recipient", "status", "last_error"])


@read_only
@notify.command("outbox")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--customer")
@click.option("--id", "message_id", type=ID, help="Only this message (all its delivery state with --json).")
@click.option("--limit", type=COUNT, default=50, show_default=True)
@pass_session
def show_outbox(session: Session, status: str | None, customer: str | None, message_id: int | None,
                limit: int) -> None:
    """Messages in the outbox, newest first, with their delivery state."""
    cid = resolve_customer(session, customer) if customer else None
    rows = session.crm.notify.outbox(status=status, customer_id=cid, limit=one_more(limit), message_id=message_id)
    session.emit(rows[:limit], columns=None if session.as_json else OUTBOX_COLUMNS)
    if len(rows) > limit:
        session.showing(limit, None, "--limit")


@notify.command("dispatch")
@click.option("--limit", type=POSITIVE, help="At most this many messages.")
@click.option("--channel", help="Only this channel.")
@click.option("--workers", type=POSITIVE, default=1, show_default=True,
              help="Threads delivering in parallel (each with its own connections).")
@BACKGROUND
@pass_session
def dispatch(session: Session, limit: int | None, channel: str | None, workers: int, background: bool) -> None:
    """Deliver due messages now (--as-of moves "now"); --background hands their ids to the queue."""
    crm = session.crm
    if background:
        jobs = Jobs(crm)
        jobs.queue()  # no broker: the error naming the settings, before anything is recorded
        ids = jobs.relay(crm.as_of(session.as_of_text) if session.as_of_text else None, channel, background=True)
        session.emit_one({"jobs": len(ids), "first_job": ids[0] if ids else None})
        return
    result = crm.notify.dispatch(limit=limit, channel=channel, workers=workers,
                                 as_of=crm.as_of(session.as_of_text) if session.as_of_text else None)
    session.emit_one(attrs.asdict(result))


@notify.command("worker")
@click.option("--channel", help="Only this channel.")
@click.option("--workers", type=POSITIVE, default=1, show_default=True,
              help="Threads delivering in parallel.")
@click.option("--poll", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="Seconds to wait when nothing is due.")
@click.option("--max-rounds", type=POSITIVE, help="Stop after this many rounds (for scripts and tests).")
@pass_session
def worker(session: Session, channel: str | None, workers: int, poll: float, max_rounds: int | None) -> None:
    """Deliver messages continuously until SIGTERM or Ctrl-C.

    On SIGTERM/SIGINT the message in flight is finished, the remaining claims
    are handed back (they stay pending for the next dispatcher) and the
    command exits 0.
    """
    crm = session.crm
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    total, rounds = DispatchResult(), 0
    try:
        # Progress goes to stderr: stdout carries only the final summary (JSON with --json).
        _progress(session, f"notify worker started ({workers} thread(s)); SIGTERM or Ctrl-C stops it")
        while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
            rounds += 1
            result = crm.notify.dispatch(channel=channel, workers=workers, stop=stop)
            total += result
            if result.total:
                _progress(session, _summary("round:", result))
            else:
                stop.wait(poll)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if session.as_json:
        session.emit_object(attrs.asdict(total))
    else:
        session.echo(_summary("stopped;", total))


def _progress(session: Session, line: str) -> None:
    if not session.quiet:
        click.echo(line, err=True)


def _summary(prefix: str, result: DispatchResult) -> str:
    counts: dict[str, Any] = attrs.asdict(result)
    return prefix + " " + ", ".join(f"{k} {v}" for k, v in counts.items())


@notify.command("retry")
@click.argument("ids", type=ID, nargs=-1)
@pass_session
def retry(session: Session, ids: tuple[int, ...]) -> None:
    """Requeue dead messages (all, or the given IDS) with fresh attempts."""
    crm = session.crm
    count = crm.notify.retry(list(ids) or None, as_of=crm.as_of(session.as_of_text) if session.as_of_text else None)
    session.emit_one({"requeued": count})
