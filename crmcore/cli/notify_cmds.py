"""``crm notify``: list and run what plugins registered in the notify family."""

from __future__ import annotations

import attrs
import click

from .context import Session, pass_session
from .entities import resolve_customer
from .family_common import component_rows


@click.group("notify")
def notify() -> None:
    """Notifications: channels, outbox, dispatch, retry."""


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
    session.emit([message], columns=None if session.as_json else ["id", "channel", "recipient", "status", "last_error"])


@notify.command("outbox")
@click.option("--status", type=click.Choice(["pending", "sending", "sent", "dead", "suppressed"]))
@click.option("--customer")
@click.option("--limit", type=int, default=50, show_default=True)
@pass_session
def show_outbox(session: Session, status: str | None, customer: str | None, limit: int) -> None:
    """Messages in the outbox, newest first."""
    cid = resolve_customer(session, customer) if customer else None
    rows = session.crm.notify.outbox(status=status, customer_id=cid, limit=limit)
    session.emit(rows, columns=None if session.as_json else
                 ["id", "channel", "recipient", "purpose", "status", "attempts", "subject", "last_error"])


@notify.command("dispatch")
@click.option("--limit", type=int, help="At most this many messages.")
@click.option("--channel", help="Only this channel.")
@pass_session
def dispatch(session: Session, limit: int | None, channel: str | None) -> None:
    """Deliver due messages now."""
    result = session.crm.notify.dispatch(limit=limit, channel=channel)
    session.emit([attrs.asdict(result)])


@notify.command("retry")
@click.argument("ids", type=int, nargs=-1)
@pass_session
def retry(session: Session, ids: tuple[int, ...]) -> None:
    """Requeue dead messages (all, or the given IDS)."""
    count = session.crm.notify.retry(list(ids) or None)
    session.emit([{"requeued": count}])
