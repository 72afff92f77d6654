"""Follow-up tasks (crm.tasks): 回访 revisits and complaint handling.

A :class:`~crmcore.domain.entities.Task` is an entity like the others (the same use-case path:
structure, normalise, ``validate_task``, authorize, write, audit, events; visibility follows the
customer's).  Beside the generic use cases this module holds what is particular to tasks:

- :meth:`TaskService.done` / :meth:`TaskService.cancel` (``completed_at`` stamped, ``on_task_completed``);
- tasks made automatically from interactions (:meth:`TaskService.from_interaction`): an interaction
  with a ``follow_up_due`` gets a follow-up task for its owner; every complaint gets a task due
  ``[tasks] complaint_sla_hours`` after it (the SLA), closed when the complaint is resolved;
- :meth:`TaskService.due` (``crm task list --due today|overdue|week``), the set-based counts a
  dashboard calls (:meth:`TaskService.overdue_count`, :meth:`TaskService.complaints_past_sla`);
- :meth:`TaskService.remind`: one message per assignee listing their tasks due today and overdue,
  queued in the outbox under a key per assignee and day (running it twice sends nothing twice).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import attrs
from sqlalchemy import and_, func, or_, select

from ..domain.convert import to_utc
from ..domain.entities import Interaction, InteractionKind, Task, TaskPriority, TaskSource, TaskStatus
from ..domain.errors import ValidationError
from ..store import tables
from .services import EntityService
from .users import owner_logins, unknown_owner

if TYPE_CHECKING:
    from .uow import UnitOfWork

#: ``crm task list --due`` windows.
DUE_WINDOWS = ("today", "overdue", "week")
#: The outbox idempotency key of one assignee's reminder on one day.
REMINDER_KEY = "task-remind:{login}:{day}"

_RELATIVE = re.compile(r"\+(\d{1,4})([dhw])")
_TITLE_LIMIT = 300


def parse_due(text: str, now: datetime, zone: str) -> datetime:
    """A due time from what a person types, as an aware UTC instant.

    ``today`` / ``tomorrow``: the end of that day in ``zone`` (23:59:59); ``+3d``, ``+2w``:
    the end of the day that many days or weeks ahead; ``+4h``: four hours from ``now``;
    ``2026-12-24``: the end of that day; an ISO datetime as written (naive: in ``zone``).
    """
    value = text.strip()
    tz = ZoneInfo(zone)
    local_today = now.astimezone(tz).date()

    def end_of(day: date) -> datetime:
        return to_utc(datetime.combine(day, time(23, 59, 59)), tz)

    if value == "today":
        return end_of(local_today)
    if value == "tomorrow":
        return end_of(local_today + timedelta(days=1))
    relative = _RELATIVE.fullmatch(value)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        if unit == "h":
            return now + timedelta(hours=amount)
        return end_of(local_today + timedelta(days=amount * (7 if unit == "w" else 1)))
    try:
        if len(value) == 10:
            return end_of(date.fromisoformat(value))
        return to_utc(datetime.fromisoformat(value), tz)
    except ValueError:
        raise ValidationError.single("due", f"{text!r} is not a due time: use today, tomorrow, +3d, +2w, +4h, "
                                     "YYYY-MM-DD or an ISO datetime", "task") from None


def day_bounds(now: datetime, zone: str) -> tuple[datetime, datetime]:
    """The start and end (exclusive) of ``now``'s day in ``zone``, as aware UTC instants."""
    tz = ZoneInfo(zone)
    day = now.astimezone(tz).date()
    return (to_utc(datetime.combine(day, time()), tz),
            to_utc(datetime.combine(day + timedelta(days=1), time()), tz))


@attrs.frozen
class Reminder:
    """One assignee's reminder as :meth:`TaskService.remind` queued it."""

    assignee: str
    message_id: int
    due_today: int
    overdue: int
    #: False when this assignee's reminder for the day was queued before (nothing new queued).
    new: bool


class TaskService(EntityService[Task]):
    """``crm.tasks``: follow-up tasks on customers; see the module documentation."""

    kind, entity, repo_name = "task", Task, "tasks"

    # -- the generic use cases, refined ---------------------------------------------------
    def prepare(self, uow: "UnitOfWork", entity: Task, previous: Task | None, check_references: bool = True) -> Task:
        """Stamp or clear ``completed_at`` by the status, resolve the assignee (a login or an
        email) to a login, then the core rules and the ``validate_task`` hooks."""
        if entity.status is TaskStatus.OPEN:
            entity = attrs.evolve(entity, completed_at=None)
        elif entity.completed_at is None or (previous is not None and previous.status is TaskStatus.OPEN
                                             and entity.completed_at == previous.completed_at):
            entity = attrs.evolve(entity, completed_at=uow.now)
        if check_references and entity.assignee is not None:
            login = owner_logins(uow, [entity.assignee]).get(entity.assignee)
            if login is None:
                raise ValidationError.single("assignee", unknown_owner(entity.assignee).replace("owner", "assignee", 1),
                                             self.kind)
            entity = attrs.evolve(entity, assignee=login)
        return super().prepare(uow, entity, previous, check_references)

    def check_references(self, uow: "UnitOfWork", entity: Task) -> None:
        """The customer exists and is live; the deal and the interaction (if any) are that customer's."""
        super().check_references(uow, entity)
        for field, repo, number in (("deal_id", uow.deals, entity.deal_id),
                                    ("interaction_id", uow.interactions, entity.interaction_id)):
            if number is None:
                continue
            with uow.scoped():
                found = repo.find(id=number)
            if found is None or found.customer_id != entity.customer_id:
                what = field.removesuffix("_id")
                raise ValidationError.single(field, f"{what} {number} is not a {what} of customer "
                                             f"{entity.customer_id}", self.kind)

    def check_references_bulk(self, uow: "UnitOfWork", entities: builtins.list[Task]) -> None:
        """The bulk path checks each row's references one by one (tasks come in small batches)."""
        super().check_references_bulk(uow, entities)
        for index, task in enumerate(entities):
            try:
                self.check_references(uow, task)
            except ValidationError as exc:
                raise ValidationError([(f"row {index}: {f}", m) for f, m in exc.issues], self.kind) from None

    def after_update(self, uow: "UnitOfWork", stored: Task, previous: Task) -> None:
        """Fire ``on_task_updated``; a task leaving ``open`` also fires ``on_task_completed``."""
        super().after_update(uow, stored, previous)
        if previous.status is TaskStatus.OPEN and stored.status is not TaskStatus.OPEN:
            uow.fire("on_task_completed", task=stored, previous=previous)

    # -- completing -----------------------------------------------------------------------
    def done(self, id: int) -> Task:
        """Mark a task done (``completed_at`` now; ``on_task_completed``); authorized as ``task.complete``."""
        return self._close(id, TaskStatus.DONE)

    def cancel(self, id: int) -> Task:
        """Cancel a task (``completed_at`` now; ``on_task_completed``); authorized as ``task.complete``."""
        return self._close(id, TaskStatus.CANCELLED)

    def _close(self, id: int, status: TaskStatus) -> Task:
        with self.crm.unit() as uow:
            previous = self.target(uow, id)
            self.crm.authorize("task.complete", previous)
            if previous.status is not TaskStatus.OPEN:
                raise ValidationError.single("status", f"task {id} is already {previous.status.value}", self.kind)
            return self.change(uow, previous, {"status": status, "completed_at": None})

    # -- automatic tasks ------------------------------------------------------------------
    def from_interaction(self, uow: "UnitOfWork", interaction: Interaction, previous: Interaction | None) -> None:
        """The tasks an interaction asks for, in its unit of work (called by ``crm.interactions``):

        - a follow-up date (new or changed) makes or moves the interaction's open follow-up task;
          a follow-up date removed cancels it;
        - a new complaint makes a task due ``[tasks] complaint_sla_hours`` after ``occurred_at``
          (done at once when the complaint is logged resolved); resolving a complaint later
          completes its open task.

        No authorization of its own: the tasks follow from the interaction the user may write
        (as points follow from a won deal); they are audited and fire ``on_task_created``.
        """
        settings = self.crm.config.tasks
        assert interaction.id is not None, "a stored interaction has an id"
        if settings.follow_up_tasks and (previous is None or previous.follow_up_due != interaction.follow_up_due):
            self._follow_up(uow, interaction)
        if settings.complaint_tasks and interaction.kind is InteractionKind.COMPLAINT:
            if previous is None or previous.kind is not InteractionKind.COMPLAINT:
                resolved = interaction.resolved_at
                self._auto(uow, interaction, TaskSource.COMPLAINT, TaskPriority.HIGH,
                           interaction.occurred_at + timedelta(hours=settings.complaint_sla_hours),
                           TaskStatus.DONE if resolved else TaskStatus.OPEN, resolved)
            elif interaction.resolved_at is not None and previous.resolved_at is None:
                for task in self._open_tasks(uow, interaction.id, TaskSource.COMPLAINT):
                    self.change(uow, task, {"status": TaskStatus.DONE, "completed_at": interaction.resolved_at})

    def _follow_up(self, uow: "UnitOfWork", interaction: Interaction) -> None:
        assert interaction.id is not None
        open_tasks = self._open_tasks(uow, interaction.id, TaskSource.FOLLOW_UP)
        if interaction.follow_up_due is None:
            for task in open_tasks:
                self.change(uow, task, {"status": TaskStatus.CANCELLED})
        elif open_tasks:
            for task in open_tasks:
                self.change(uow, task, {"due": interaction.follow_up_due})
        else:
            self._auto(uow, interaction, TaskSource.FOLLOW_UP, TaskPriority.NORMAL, interaction.follow_up_due,
                       TaskStatus.OPEN, None)

    def _open_tasks(self, uow: "UnitOfWork", interaction_id: int, source: TaskSource) -> builtins.list[Task]:
        return uow.tasks.list({"interaction_id": interaction_id, "source": source.value, "status": "open"})

    def _auto(self, uow: "UnitOfWork", interaction: Interaction, source: TaskSource, priority: TaskPriority,
              due: datetime, status: TaskStatus, completed_at: datetime | None) -> Task:
        label = "Complaint" if source is TaskSource.COMPLAINT else "Follow up"
        about = interaction.subject or interaction.kind.value
        title = f"{label}: {about}"[:_TITLE_LIMIT]
        task = Task(customer_id=interaction.customer_id, title=title, interaction_id=interaction.id,
                    assignee=self._assignee_for(uow, interaction), due=due, status=status, priority=priority,
                    source=source, completed_at=completed_at)
        task = self.prepare(uow, task, None)
        stored = uow.tasks.insert(task, uow.now)
        uow.audit.created(self.kind, stored)
        self.after_insert(uow, stored)
        return stored

    def _assignee_for(self, uow: "UnitOfWork", interaction: Interaction) -> str | None:
        """The interaction's owner if a user has that login or email, else the customer's owner,
        else the acting user (if a user), else nobody."""
        customer_owner = uow.customers.get(interaction.customer_id).owner
        for candidate in (interaction.owner, customer_owner, uow.actor):
            if candidate:
                found = uow.conn.execute(select(tables.users.c.login).where(or_(
                    tables.users.c.login == candidate, tables.users.c.email == candidate))).scalar()
                if found is not None:
                    return str(found)
        return None

    # -- reading by due time --------------------------------------------------------------
    def due(self, window: str | None = None, *, as_of: datetime | None = None, assignee: str | None = None,
            status: str | None = "open", filters: Mapping[str, Any] | None = None,
            limit: int | None = None) -> builtins.list[Task]:
        """Tasks by due time, soonest first: ``window`` ``today`` (due before the end of today in the
        configured time zone, overdue ones included), ``overdue`` (due before ``as_of``), ``week``
        (before the end of the 7th day), None (any); ``status`` None for every status."""
        criteria = dict(filters or {})
        criteria.update(self._window(window, as_of))
        if assignee is not None:
            criteria["assignee"] = assignee
        if status is not None:
            criteria["status"] = status
        return self.list(criteria, order_by="due", limit=limit)

    def _window(self, window: str | None, as_of: datetime | None) -> dict[str, Any]:
        now = self.crm.as_of(as_of)
        if window is None:
            return {}
        if window not in DUE_WINDOWS:
            raise ValidationError.single("due", f"must be one of {', '.join(DUE_WINDOWS)}, got {window!r}", self.kind)
        if window == "overdue":
            return {"due__lt": now}
        _, end = day_bounds(now, self.crm.config.timezone)
        return {"due__lt": end + timedelta(days=6 if window == "week" else 0)}

    def overdue_count(self, as_of: datetime | None = None, *, assignee: str | None = None,
                      source: str | None = None) -> int:
        """How many open tasks are past due at ``as_of`` (one COUNT; visibility applies)."""
        criteria: dict[str, Any] = {"status": "open", "due__lt": self.crm.as_of(as_of)}
        if assignee is not None:
            criteria["assignee"] = assignee
        if source is not None:
            criteria["source"] = source
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("task.list", None)
            return uow.tasks.count(criteria)

    def complaints_past_sla(self, as_of: datetime | None = None, *, include_late: bool = False) -> int:
        """Complaints past their SLA at ``as_of``, in one COUNT (visibility applies): complaint tasks
        still open after their due time; with ``include_late`` also those completed after it."""
        now = self.crm.as_of(as_of)
        t = tables.tasks
        late = and_(t.c.status == TaskStatus.OPEN.value, t.c.due < now)
        if include_late:
            late = or_(late, and_(t.c.status == TaskStatus.DONE.value, t.c.completed_at > t.c.due))
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("task.list", None)
            c = tables.customers
            return int(uow.conn.execute(select(func.count()).select_from(t.join(c, c.c.id == t.c.customer_id)).where(
                t.c.source == TaskSource.COMPLAINT.value, late, c.c.archived_at.is_(None))).scalar_one())

    # -- the daily reminder ---------------------------------------------------------------
    def remind(self, as_of: datetime | None = None, channel: str | None = None) -> builtins.list[Reminder]:
        """Queue one message per assignee listing their open tasks due today or overdue at ``as_of``
        (today in the configured time zone), through ``channel`` (default ``[tasks]
        reminder_channel``, else ``[notify] channel``).  The outbox key is per assignee and day, so
        a second run on the same day queues nothing new.  Authorized as ``task.remind``; the tasks
        are those the acting user may see.  Send them with ``crm notify send`` (``crm task remind``
        does)."""
        now = self.crm.as_of(as_of)
        settings = self.crm.config
        channel = channel or settings.tasks.reminder_channel or settings.notify.channel
        chan = self.crm.notify.registry.get(channel)  # an unknown channel: a clear error naming the known ones
        start, end = day_bounds(now, settings.timezone)
        day = now.astimezone(ZoneInfo(settings.timezone)).date().isoformat()
        t, users = tables.tasks, tables.users
        with self.crm.unit() as uow:
            self.crm.authorize("task.remind", channel)
            with uow.scoped():  # the tasks the acting user may see
                rows = uow.conn.execute(
                    select(t.c.id, t.c.title, t.c.due, t.c.assignee, t.c.customer_id, t.c.priority)
                    .join(tables.customers, tables.customers.c.id == t.c.customer_id)
                    .where(t.c.status == TaskStatus.OPEN.value, t.c.assignee.is_not(None), t.c.due < end,
                           tables.customers.c.archived_at.is_(None))  # archived/erased: nobody to call
                    .order_by(t.c.assignee, t.c.due, t.c.id)).mappings().all()
            by_assignee: dict[str, builtins.list[Mapping[str, Any]]] = {}
            for row in rows:
                by_assignee.setdefault(row["assignee"], []).append(dict(row))
            people = {r["login"]: r for r in uow.conn.execute(select(
                users.c.login, users.c.email, users.c.locale, users.c.display_name, users.c.active).where(
                users.c.login.in_(sorted(by_assignee)))).mappings()} if by_assignee else {}
            reminders = []
            for login, tasks in by_assignee.items():
                person = people.get(login)
                if person is not None and not person["active"]:
                    continue
                overdue = [r for r in tasks if r["due"] < now]
                today = [r for r in tasks if r["due"] >= now]
                chinese = bool(person and (person["locale"] or "").lower().startswith("zh"))
                subject, body = _reminder_text(day, today, overdue, chinese, settings.timezone)
                key = REMINDER_KEY.format(login=login, day=day)
                existed = uow.conn.execute(select(tables.notify_outbox.c.id).where(
                    tables.notify_outbox.c.idempotency_key == key)).scalar()
                recipient = person[chan.address] if person is not None and chan.address in ("email",) else None
                message_id = uow.outbox.enqueue(
                    channel, recipient=recipient, subject=subject, body=body, key=key,
                    payload={"kind": "task-reminder", "assignee": login, "day": day,
                             "tasks": [r["id"] for r in tasks], "overdue": [r["id"] for r in overdue]})
                reminders.append(Reminder(login, message_id, len(today), len(overdue), existed is None))
            return reminders


def _reminder_text(day: str, today: builtins.list[Mapping[str, Any]], overdue: builtins.list[Mapping[str, Any]],
                   chinese: bool, zone: str) -> tuple[str, str]:
    """The subject and body of one reminder (zh-CN for a user whose locale is Chinese, else English)."""
    tz = ZoneInfo(zone)

    def line(row: Mapping[str, Any]) -> str:
        due = row["due"].astimezone(tz).strftime("%Y-%m-%d %H:%M")
        # The customer by id, not by name: the message is the assignee's, not the customer's, and
        # erasure rewrites only the task lines (crmcore.application.privacy_erase).
        return f"- #{row['id']} {row['title']} ({customer} #{row['customer_id']}; {due}; {row['priority']})"

    customer = "客户" if chinese else "customer"

    if chinese:
        subject = f"{day} 待办：今日到期 {len(today)} 项，已逾期 {len(overdue)} 项"
        parts = [subject]
        if overdue:
            parts += ["", "已逾期："] + [line(r) for r in overdue]
        if today:
            parts += ["", "今日到期："] + [line(r) for r in today]
    else:
        subject = f"Tasks for {day}: {len(today)} due today, {len(overdue)} overdue"
        parts = [subject]
        if overdue:
            parts += ["", "Overdue:"] + [line(r) for r in overdue]
        if today:
            parts += ["", "Due today:"] + [line(r) for r in today]
    return subject, "\n".join(parts)
