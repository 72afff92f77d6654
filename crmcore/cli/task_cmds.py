"""``crm task``: follow-up tasks (回访) and complaint handling.

``add`` (``--due today|tomorrow|+3d|DATE``), ``list`` (``--mine``, ``--due today|overdue|week``),
``done``, ``cancel``, ``remind`` (the daily reminder to each assignee), and the generic ``show``,
``update`` and ``delete`` every entity has.  Everything that depends on "now" reads ``--as-of``.
"""

from __future__ import annotations

from typing import Any

import click

from ..application.tasks import DUE_WINDOWS, parse_due
from ..domain.entities import Task, TaskPriority, TaskStatus
from .context import Session, pass_session, read_only
from .entities import _record, _show, make_group, resolve_customer
from .params import COUNT, ID

LIST_COLUMNS = ["id", "customer_id", "customer_name", "title", "assignee", "due", "status", "priority", "source"]

task = make_group("task", Task, lambda crm: crm.tasks)
task.help = "Follow-up tasks: add, list (--mine, --due today|overdue|week), done, cancel, remind, show, update, delete."


@task.command("add")
@click.option("--customer", "customer", required=True, metavar="REF", help="customer id, external id or email")
@click.option("--title", required=True, help="What to do.")
@click.option("--due", metavar="WHEN", help="today, tomorrow, +3d, +2w, +4h, YYYY-MM-DD or an ISO datetime "
                                            "(relative to --as-of; days end at 23:59:59 in the configured timezone).")
@click.option("--assignee", metavar="USER", help="The user (login or email) who does it (default: you).")
@click.option("--priority", type=click.Choice([p.value for p in TaskPriority]), default="normal", show_default=True)
@click.option("--deal", "deal_id", type=ID, help="The deal it is about (one of the customer's).")
@click.option("--interaction", "interaction_id", type=ID, help="The interaction it follows up (the customer's).")
@click.option("--notes", help="Details (may hold several lines).")
@click.option("--set", "custom", multiple=True, metavar="NAME=VALUE", help="Set a custom field (repeatable).")
@pass_session
def add(session: Session, customer: str, title: str, due: str | None, assignee: str | None, priority: str,
        deal_id: int | None, interaction_id: int | None, notes: str | None, custom: tuple[str, ...]) -> None:
    """Add a follow-up task on a customer."""
    crm = session.crm
    values: dict[str, Any] = {"customer_id": resolve_customer(session, customer), "title": title,
                              "priority": priority, "deal_id": deal_id, "interaction_id": interaction_id,
                              "notes": notes}
    if due is not None:
        values["due"] = parse_due(due, session.as_of, crm.config.timezone)
    actor = crm.actor
    values["assignee"] = assignee if assignee is not None else (actor if actor != "system" else None)
    attributes = {}
    for item in custom:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise click.UsageError(f"--set {item!r} is not NAME=VALUE")
        attributes[name] = value
    created = crm.tasks.add(**{k: v for k, v in values.items() if v is not None}, attributes=attributes)
    _show(session, "task", created, f"task {created.id} added" + (f", due {created.due.isoformat()}"
                                                                   if created.due else ""))



@read_only
@task.command("list")
@click.option("--mine", is_flag=True, help="Only tasks assigned to you (the acting user).")
@click.option("--due", "window", type=click.Choice(DUE_WINDOWS),
              help="today: due by the end of today (overdue included); overdue: past due; week: within 7 days.")
@click.option("--status", type=click.Choice([s.value for s in TaskStatus] + ["all"]), default="open",
              show_default=True)
@click.option("--assignee", metavar="USER", help="Only tasks assigned to USER.")
@click.option("--customer", "customer", metavar="REF", help="Only tasks on this customer.")
@click.option("--limit", type=COUNT, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output (as the global --json).")
@pass_session
def list_(session: Session, mine: bool, window: str | None, status: str, assignee: str | None,
          customer: str | None, limit: int, as_json: bool) -> None:
    """List tasks, soonest due first."""
    session.as_json = session.as_json or as_json
    crm = session.crm
    if mine:
        assignee = crm.actor
    filters = {"customer_id": resolve_customer(session, customer)} if customer is not None else {}
    found = crm.tasks.due(window, as_of=session.as_of, assignee=assignee,
                          status=None if status == "all" else status, filters=filters, limit=limit)
    names: dict[int | None, str] = {}
    ids = sorted({t.customer_id for t in found})
    if ids:
        names = {c.id: c.name for c in crm.customers.list({"id__in": ids}, limit=len(ids), archived="include")}
    rows = []
    for t in found:
        record = _record(t)
        record = {k: record[k] for k in ("id", "customer_id")} | {"customer_name": names.get(t.customer_id)} | \
            {k: v for k, v in record.items() if k not in ("id", "customer_id")}
        record["overdue"] = t.status is TaskStatus.OPEN and t.due is not None and t.due < session.as_of
        rows.append(record)
    session.emit(rows, columns=None if session.as_json else LIST_COLUMNS + ["overdue"])



@task.command("done")
@click.argument("id", type=ID)
@pass_session
def done(session: Session, id: int) -> None:
    """Mark task ID done."""
    finished = session.crm.tasks.done(id)
    session.emit_object(_record(finished), f"task {id} done")


@task.command("cancel")
@click.argument("id", type=ID)
@pass_session
def cancel(session: Session, id: int) -> None:
    """Cancel task ID."""
    finished = session.crm.tasks.cancel(id)
    session.emit_object(_record(finished), f"task {id} cancelled")


@task.command("remind")
@click.option("--channel", metavar="NAME",
              help="The channel (default: [tasks] reminder_channel, else [notify] channel).")
@click.option("--queue-only", is_flag=True, help="Queue the reminders; leave sending to `crm notify send` or a worker.")
@pass_session
def remind(session: Session, channel: str | None, queue_only: bool) -> None:
    """Send each assignee one message listing their open tasks due today and overdue (as of --as-of).

    Run it once a day (cron, or the jobs scheduler): a second run on the same day queues and sends
    nothing again (one outbox key per assignee and day)."""
    crm = session.crm
    reminders = crm.tasks.remind(session.as_of, channel)
    sent = None
    if not queue_only and any(r.new for r in reminders):
        chosen = channel or crm.config.tasks.reminder_channel or crm.config.notify.channel
        sent = crm.notify.dispatch(channel=chosen)  # now: the messages were queued now, whatever --as-of says
    rows = [{"assignee": r.assignee, "message_id": r.message_id, "due_today": r.due_today, "overdue": r.overdue,
             "queued": "new" if r.new else "already queued today"} for r in reminders]
    if session.as_json:
        session.emit_object({"reminders": rows, "sent": None if sent is None else sent.sent})
        return
    if rows:
        session.emit(rows, columns=["assignee", "message_id", "due_today", "overdue", "queued"])
    new = sum(r.new for r in reminders)
    session.echo(f"{new} reminder(s) queued" + ("" if sent is None else f", {sent.sent} sent") +
                 (f"; {len(reminders) - new} already queued today" if len(reminders) > new else ""))
