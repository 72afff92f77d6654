"""``crm audit``: read and verify the hash-chained audit trail."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click

from ..application import audit as trail
from ..domain.errors import CRMError
from .context import Session, pass_session, read_only
from .params import COUNT, ID, one_more

if TYPE_CHECKING:
    from ..app import CRM


@click.group("audit")
def audit() -> None:
    """The audit trail: who changed what, when."""


@read_only
@audit.command("log")
@click.option("--customer", "customer_id", type=ID, help="Only records about this customer (and its records).")
@click.option("--user", "actor", metavar="LOGIN", help="Only what this user did.")
@click.option("--since", metavar="DATE", help="Only records from this date/time on (YYYY-MM-DD or ISO).")
@click.option("--limit", type=COUNT, default=100, show_default=True, help="The latest N records.")
@pass_session
def log(session: Session, customer_id: int | None, actor: str | None, since: str | None, limit: int) -> None:
    """List audit records, oldest first (the latest --limit of them)."""
    crm = session.crm
    crm.authorize("audit.log", customer_id)  # the trail has no service object: asked here
    moment = _since(crm, since) if since is not None else None
    with crm.unit(readonly=True) as uow:
        found = trail.records(uow.conn, customer_id=customer_id, actor=actor, since=moment, limit=one_more(limit))
    shown = found[-limit:] if limit else []
    rows = [r.as_dict() for r in shown]
    if not session.as_json:
        rows = [{**r, "what": _what(r)} for r in rows]
    session.emit(rows, columns=["seq", "recorded_at", "actor", "action", "entity", "entity_id", "what"])
    if len(found) > limit:
        session.showing(limit, None, "--limit")


def _since(crm: CRM, text: str) -> datetime:
    """A bare date is the start of that day in the configured time zone (``--as-of`` takes its end)."""
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None:
        return crm.as_of(text)
    return datetime.combine(day, time(), ZoneInfo(crm.config.timezone)).astimezone(timezone.utc)


def _what(record: dict) -> str:  # type: ignore[type-arg]
    if record["ids"] is not None:
        return f"{len(record['ids'])} rows"
    changes = record["changes"] or {}
    return ", ".join(sorted(changes))[:80]


@read_only
@audit.command("verify")
@pass_session
def verify(session: Session) -> None:
    """Recompute the hash chain: detects an edited or a deleted record (exit 1)."""
    session.crm.authorize("audit.verify", None)
    with session.crm.unit(readonly=True) as uow:
        result = trail.verify(uow.conn)
    if session.as_json:
        session.emit_object({"ok": result.ok, "checked": result.checked, "head": result.head_hash,
                             "problems": list(result.problems)})
    if not result.ok:
        raise CRMError(f"audit trail broken: {result.problems[0]}"
                       + (f" (and {len(result.problems) - 1} more problems)" if len(result.problems) > 1 else ""))
    if not session.as_json:
        session.echo(f"audit trail intact: {result.checked} records, head {result.head_hash}")
