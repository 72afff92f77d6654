"""Follow-up tasks in the core (issue 17, point 3) on every database: the use cases with their
events, audit and validation; tasks made from interactions (follow-up dates, complaints and
their SLA); due windows and the dashboard counts checked against a computation in Python from
every row; visibility; merge, privacy export and erasure, backup fingerprints."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

import crmcore
from crmcore import NotFound, TaskPriority, TaskSource, TaskStatus, ValidationError, hookimpl
from crmcore.application.privacy_export import collect
from crmcore.application.tasks import day_bounds, parse_due
from crmcore.store import tables
from crmcore.store.backup import fingerprint

NOW = datetime(2026, 12, 6, 1, 0, tzinfo=timezone.utc)  # 09:00 in Shanghai
ZONE = "Asia/Shanghai"


def config(**more):
    return {"timezone": ZONE, "default_currency": "CNY", **more}


class Recorder:
    """Records every task event and refuses a task titled "refuse me"."""

    def __init__(self):
        self.events = []

    @hookimpl
    def on_task_created(self, uow, task):
        self.events.append(("created", task.id, task.source.value))

    @hookimpl
    def on_task_updated(self, uow, task, previous):
        self.events.append(("updated", task.id, previous.status.value, task.status.value))

    @hookimpl
    def on_task_completed(self, uow, task, previous):
        self.events.append(("completed", task.id, task.status.value))

    @hookimpl
    def on_task_deleted(self, uow, task):
        self.events.append(("deleted", task.id))

    @hookimpl
    def on_tasks_imported(self, uow, tasks):
        self.events.append(("imported", len(tasks)))

    @hookimpl
    def validate_task(self, uow, task, previous):
        return [("title", "refused by policy")] if task.title == "refuse me" else None


def audit_actions(crm, entity="task"):
    with crm.engine.connect() as conn:
        return [r.action for r in conn.execute(select(tables.audit_log.c.action).where(
            tables.audit_log.c.entity == entity).order_by(tables.audit_log.c.seq))]


def test_use_cases_events_audit_and_validation(crm_factory):
    recorder = Recorder()
    crm = crm_factory(extra_plugins=[recorder], config=config(), clock=lambda: NOW)
    customer = crm.customers.add(name="张伟", owner="li.wei")
    other = crm.customers.add(name="王芳")
    deal = crm.deals.add(customer_id=customer.id, title="年度合同", amount="1000", stage="lead")
    task = crm.tasks.add(customer_id=customer.id, title="回访：合同续签", due="2026-12-08T10:00:00+08:00",
                         assignee="li.wei", priority="high", deal_id=deal.id, notes="line 1\r\nline 2")
    assert (task.status, task.priority, task.source) == (TaskStatus.OPEN, TaskPriority.HIGH, TaskSource.MANUAL)
    assert task.due == datetime(2026, 12, 8, 2, 0, tzinfo=timezone.utc) and task.notes == "line 1\nline 2"
    assert crm.tasks.get(task.id) == task

    done = crm.tasks.done(task.id)
    assert done.status is TaskStatus.DONE and done.completed_at == NOW
    with pytest.raises(ValidationError, match="already done"):
        crm.tasks.done(task.id)
    reopened = crm.tasks.update(task.id, status="open")
    assert reopened.completed_at is None
    cancelled = crm.tasks.cancel(task.id)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.completed_at == NOW
    crm.tasks.delete(task.id)
    with pytest.raises(NotFound):
        crm.tasks.get(task.id)
    assert crm.tasks.add_many([{"customer_id": customer.id, "title": f"批量 {n}"} for n in range(3)]) == 3
    assert recorder.events == [
        ("created", task.id, "manual"), ("updated", task.id, "open", "done"), ("completed", task.id, "done"),
        ("updated", task.id, "done", "open"), ("updated", task.id, "open", "cancelled"),
        ("completed", task.id, "cancelled"), ("deleted", task.id), ("imported", 3)]
    assert audit_actions(crm) == ["task.create", "task.update", "task.update", "task.update", "task.delete",
                                  "task.import"]

    bad = [({"title": "refuse me"}, "refused by policy"), ({"title": "  "}, "must not be blank"),
           ({"title": "x", "assignee": "nobody@example.com"}, "unknown assignee"),
           ({"title": "x", "deal_id": deal.id, "customer_id": other.id}, f"deal {deal.id} is not a deal of customer"),
           ({"title": "x", "status": "waiting"}, "status"), ({"title": "x", "priority": "asap"}, "priority"),
           ({"title": "x", "customer_id": 999}, "customer 999 does not exist")]
    crm.users.add("li.wei")  # the CRM is configured from now on: an unknown assignee is refused
    for fields, message in bad:
        with pytest.raises(ValidationError, match=message):
            crm.tasks.add(**{"customer_id": customer.id, **fields})
    assert crm.tasks.count() == 3  # nothing half-written


def test_tasks_from_interactions(crm_factory):
    recorder = Recorder()
    crm = crm_factory(extra_plugins=[recorder], config=config(tasks={"complaint_sla_hours": 12}), clock=lambda: NOW)
    crm.users.add("li.wei")
    crm.users.add("zhao", email="zhao@example.com")
    customer = crm.customers.add(name="张伟", owner="li.wei")
    # A follow-up date makes a task for the interaction's owner (a user, given by email here).
    call = crm.interactions.add(customer_id=customer.id, kind="call", occurred_at=NOW, subject="报价",
                                follow_up_due="2026-12-09T10:00:00+08:00", owner="zhao@example.com")
    [follow] = crm.tasks.list({"interaction_id": call.id})
    assert (follow.source, follow.assignee, follow.due, follow.title) == (
        TaskSource.FOLLOW_UP, "zhao", datetime(2026, 12, 9, 2, tzinfo=timezone.utc), "Follow up: 报价")
    # Moving the date moves the task; removing it cancels the task.
    crm.interactions.update(call.id, follow_up_due="2026-12-10T10:00:00+08:00")
    assert crm.tasks.get(follow.id).due == datetime(2026, 12, 10, 2, tzinfo=timezone.utc)
    crm.interactions.update(call.id, follow_up_due=None)
    assert crm.tasks.get(follow.id).status is TaskStatus.CANCELLED
    crm.interactions.update(call.id, follow_up_due="2026-12-11")  # a new date: a new open task
    assert [t.status for t in crm.tasks.list({"interaction_id": call.id}, order_by="id")] == [
        TaskStatus.CANCELLED, TaskStatus.OPEN]

    # Every complaint: a task due at occurred_at + the SLA, for the customer's owner (the
    # interaction's owner is no user); resolving the complaint completes it.
    occurred = NOW - timedelta(hours=3)
    complaint = crm.interactions.add(customer_id=customer.id, kind="complaint", occurred_at=occurred,
                                     subject="物流太慢", owner="前台")
    [sla] = crm.tasks.list({"interaction_id": complaint.id})
    assert (sla.source, sla.priority, sla.assignee, sla.due, sla.status) == (
        TaskSource.COMPLAINT, TaskPriority.HIGH, "li.wei", occurred + timedelta(hours=12), TaskStatus.OPEN)
    crm.interactions.update(complaint.id, resolved_at=NOW)
    assert crm.tasks.get(sla.id).status is TaskStatus.DONE and crm.tasks.get(sla.id).completed_at == NOW
    # A complaint logged already resolved: its task is done at the resolution time (the SLA's record).
    logged = crm.interactions.add(customer_id=customer.id, kind="complaint", occurred_at=occurred,
                                  resolved_at=occurred + timedelta(hours=1))
    [closed] = crm.tasks.list({"interaction_id": logged.id}, )
    assert closed.status is TaskStatus.DONE and closed.completed_at == occurred + timedelta(hours=1)
    created = [e for e in recorder.events if e[0] == "created"]
    assert [e[2] for e in created] == ["follow-up", "follow-up", "complaint", "complaint"]
    assert audit_actions(crm).count("task.create") == 4

    # Switched off in [tasks]: no automatic tasks.
    quiet = crm_factory(config=config(tasks={"complaint_tasks": False, "follow_up_tasks": False}), clock=lambda: NOW)
    before = quiet.tasks.count()
    quiet.interactions.add(customer_id=customer.id, kind="complaint", occurred_at=NOW, follow_up_due="2026-12-12")
    assert quiet.tasks.count() == before


def test_due_windows_and_counts_match_python(crm_factory):
    crm = crm_factory(config=config(), clock=lambda: NOW)
    crm.users.add("a")
    crm.users.add("b")
    customer = crm.customers.add(name="客户")
    start, end = day_bounds(NOW, ZONE)
    assert (start, end) == (datetime(2026, 12, 5, 16, tzinfo=timezone.utc),
                            datetime(2026, 12, 6, 16, tzinfo=timezone.utc))
    offsets = [-200, -30, -2, -1, 0, 1, 5, 14, 15, 16, 40, 24 * 6 + 14, 24 * 7 + 20, None]
    n = 0
    for hours in offsets:
        for status in ("open", "done", "cancelled"):
            for source in ("manual", "complaint"):
                n += 1
                due = None if hours is None else NOW + timedelta(hours=hours)
                completed = None if status == "open" else NOW + timedelta(hours=n % 5)
                crm.tasks.add(customer_id=customer.id, title=f"t{n}", due=due, status=status, source=source,
                              assignee="ab"[n % 2], completed_at=completed)
    every = crm.tasks.list({}, limit=None)
    assert len(every) == n

    def ids(rows):
        return sorted(t.id for t in rows)

    live = [t for t in every if t.status is TaskStatus.OPEN]
    assert ids(crm.tasks.due("overdue")) == ids(t for t in live if t.due is not None and t.due < NOW)
    assert ids(crm.tasks.due("today")) == ids(t for t in live if t.due is not None and t.due < end)
    assert ids(crm.tasks.due("week")) == ids(t for t in live if t.due is not None and t.due < end + timedelta(days=6))
    assert ids(crm.tasks.due("today", assignee="a")) == ids(
        t for t in live if t.due is not None and t.due < end and t.assignee == "a")
    assert ids(crm.tasks.due(None, status=None)) == ids(every)
    soonest = [t.due for t in crm.tasks.due("week")]
    assert soonest == sorted(soonest)
    later = NOW + timedelta(days=2)
    assert crm.tasks.overdue_count() == sum(1 for t in live if t.due is not None and t.due < NOW)
    assert crm.tasks.overdue_count(later, assignee="b") == sum(
        1 for t in live if t.due is not None and t.due < later and t.assignee == "b")
    assert crm.tasks.complaints_past_sla(later) == sum(
        1 for t in live if t.source is TaskSource.COMPLAINT and t.due is not None and t.due < later)
    assert crm.tasks.complaints_past_sla(later, include_late=True) == sum(
        1 for t in every if t.source is TaskSource.COMPLAINT and t.due is not None and (
            (t.status is TaskStatus.OPEN and t.due < later)
            or (t.status is TaskStatus.DONE and t.completed_at > t.due)))
    with pytest.raises(ValidationError, match="today, overdue, week"):
        crm.tasks.due("yesterday")


def test_parse_due():
    now = NOW  # 2026-12-06 09:00 in Shanghai
    end = lambda day: datetime(2026, 12, day, 15, 59, 59, tzinfo=timezone.utc)  # noqa: E731
    assert parse_due("today", now, ZONE) == end(6)
    assert parse_due("tomorrow", now, ZONE) == end(7)
    assert parse_due("+3d", now, ZONE) == end(9)
    assert parse_due("+1w", now, ZONE) == end(13)
    assert parse_due("+4h", now, ZONE) == now + timedelta(hours=4)
    assert parse_due("2026-12-24", now, ZONE) == end(24)
    assert parse_due("2026-12-24T10:00", now, ZONE) == datetime(2026, 12, 24, 2, tzinfo=timezone.utc)
    late = datetime(2026, 12, 6, 17, 0, tzinfo=timezone.utc)  # already the 7th in Shanghai
    assert parse_due("today", late, ZONE) == end(7)
    for bad in ("someday", "+3y", "-1d", "2026-13-01"):
        with pytest.raises(ValidationError, match="is not a due time"):
            parse_due(bad, now, ZONE)


class OwnersSee:
    @hookimpl
    def visibility(self, actor, entity):
        if actor in ("system", "boss") or entity != "customer":
            return None
        return tables.customers.c.owner == actor


def test_visibility_follows_the_customer(crm_factory):
    crm = crm_factory(plugins=["notify"], extra_plugins=[OwnersSee()], config=config(), clock=lambda: NOW)
    for login in ("alice", "bob"):
        crm.users.add(login)
    mine = crm.customers.add(name="甲", owner="alice")
    theirs = crm.customers.add(name="乙", owner="bob")
    visible = crm.tasks.add(customer_id=mine.id, title="mine", assignee="alice", due=NOW)
    # Assigned to alice, but on bob's customer: alice does not see it.
    hidden = crm.tasks.add(customer_id=theirs.id, title="theirs", assignee="alice", due=NOW)
    with crm.acting_as("alice"):
        assert [t.id for t in crm.tasks.list()] == [visible.id]
        assert [t.id for t in crm.tasks.due("today", assignee="alice")] == [visible.id]
        assert crm.tasks.overdue_count(NOW + timedelta(hours=1)) == 1
        for call in (lambda: crm.tasks.get(hidden.id), lambda: crm.tasks.done(hidden.id),
                     lambda: crm.tasks.update(hidden.id, title="x")):
            with pytest.raises(NotFound):
                call()
        with pytest.raises(ValidationError, match=f"customer {theirs.id} does not exist"):
            crm.tasks.add(customer_id=theirs.id, title="sneaky")
        [reminder] = crm.tasks.remind(NOW, channel="console")
        assert reminder.assignee == "alice" and reminder.due_today + reminder.overdue == 1
    with crm.unit(readonly=True) as uow:
        payload = uow.conn.execute(select(tables.notify_outbox.c.payload)).scalar_one()
    assert payload["tasks"] == [visible.id]


def test_reminders_are_sent_once_per_assignee_and_day(crm_factory, tmp_path):
    out = tmp_path / "out.jsonl"
    crm = crm_factory(plugins=["notify"], config=config(channels={"file": {"path": str(out)}},
                                                         tasks={"reminder_channel": "file"}), clock=lambda: NOW)
    crm.users.add("li.wei", locale="zh-CN", email="li@example.com")
    crm.users.add("ann", locale="en")
    customer = crm.customers.add(name="张伟")
    crm.tasks.add(customer_id=customer.id, title="逾期", assignee="li.wei", due=NOW - timedelta(days=1))
    crm.tasks.add(customer_id=customer.id, title="今天", assignee="li.wei", due=NOW + timedelta(hours=2))
    crm.tasks.add(customer_id=customer.id, title="tomorrow", assignee="li.wei", due=NOW + timedelta(days=1))
    crm.tasks.add(customer_id=customer.id, title="today", assignee="ann", due=NOW + timedelta(hours=1))
    done = crm.tasks.add(customer_id=customer.id, title="done", assignee="ann", due=NOW - timedelta(hours=1))
    crm.tasks.done(done.id)
    crm.tasks.add(customer_id=customer.id, title="nobody's", due=NOW)

    first = crm.tasks.remind(NOW)
    assert [(r.assignee, r.due_today, r.overdue, r.new) for r in first] == [("ann", 1, 0, True), ("li.wei", 1, 1, True)]
    assert crm.notify.dispatch().sent == 2
    again = crm.tasks.remind(NOW + timedelta(hours=3))  # the same day in Shanghai
    assert [r.new for r in again] == [False, False] and [r.message_id for r in again] == [r.message_id for r in first]
    assert crm.notify.dispatch().sent == 0
    import json
    sent = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(sent) == 2
    by = {m["payload"]["assignee"]: m for m in sent}
    assert by["li.wei"]["subject"] == "2026-12-06 待办：今日到期 1 项，已逾期 1 项"
    assert f"- #1 逾期 (客户 #{customer.id};" in by["li.wei"]["body"] and "tomorrow" not in by["li.wei"]["body"]
    assert "张伟" not in by["li.wei"]["body"]  # the customer by id: the message is the assignee's
    assert by["ann"]["subject"] == "Tasks for 2026-12-06: 1 due today, 0 overdue"
    assert by["ann"]["idempotency_key"] == "task-remind:ann:2026-12-06"
    # The next day: new reminders.
    assert all(r.new for r in crm.tasks.remind(NOW + timedelta(days=1)))
    with pytest.raises(crmcore.UnknownComponent):
        crm.tasks.remind(NOW, channel="pigeon")


def test_merge_privacy_and_backup_cover_tasks(crm_factory):
    crm = crm_factory(config=config(), clock=lambda: NOW)
    kept = crm.customers.add(name="张伟", email="zw@example.com")
    merged = crm.customers.add(name="张 伟", email="zhang.wei@example.com", on_duplicate="add")
    task = crm.tasks.add(customer_id=merged.id, title="给张伟回电 13800138000", notes="私人备注",
                         external_id="T-1")
    kept_task = crm.tasks.add(customer_id=kept.id, title="keep")
    result = crm.merges.merge(kept.id, [merged.id])
    assert crm.tasks.get(task.id).customer_id == kept.id
    crm.merges.unmerge(result.merge_id)
    assert crm.tasks.get(task.id).customer_id == merged.id

    with crm.unit(readonly=True) as uow:
        exported = collect(uow, crm.customers.get(merged.id))
        assert [row["title"] for row in exported["sections"]["tasks"]] == ["给张伟回电 13800138000"]
        counts = fingerprint(uow.conn)["counts"]
    assert counts["tasks"] == 2
    crm.privacy.erase(merged.id, reason="request")
    erased = crm.tasks.get(task.id)
    assert (erased.title, erased.notes, erased.external_id) == ("(erased)", None, None)
    assert crm.tasks.get(kept_task.id).title == "keep"


def test_erasure_archive_and_unmerge_keep_reminders_counts_and_tasks_right(crm_factory):
    """Review fixes: an erased customer's task lines leave the reminders already queued; an
    archived customer's tasks are neither reminded nor counted past the SLA; a task made after a
    merge on a moved interaction goes back with it on unmerge (and can still be completed)."""
    crm = crm_factory(plugins=["notify"], config=config(tasks={"reminder_channel": "console"}),
                      clock=lambda: NOW)
    crm.users.add("ann", locale="en")
    gone = crm.customers.add(name="Erin Erased", email="erin@example.com")
    stays = crm.customers.add(name="Sam Stays")
    secret = crm.tasks.add(customer_id=gone.id, title="Call Erin about 555-0199", assignee="ann",
                           due=NOW - timedelta(hours=1))
    kept = crm.tasks.add(customer_id=stays.id, title="Call Sam", assignee="ann", due=NOW - timedelta(hours=1))
    [reminder] = crm.tasks.remind(NOW)
    crm.privacy.erase(gone.id, reason="request")
    with crm.engine.connect() as conn:
        body = conn.execute(select(tables.notify_outbox.c.body).where(
            tables.notify_outbox.c.id == reminder.message_id)).scalar_one()
    assert "555-0199" not in body and "Erin" not in body
    assert f"- #{secret.id} (erased)" in body and f"- #{kept.id} Call Sam" in body

    # Archived: no reminder line and no SLA count for its complaint task.
    archived = crm.customers.add(name="Archie")
    crm.interactions.add(customer_id=archived.id, kind="complaint", subject="broken", occurred_at=NOW - timedelta(days=3))
    before = crm.tasks.complaints_past_sla(NOW + timedelta(days=2))
    crm.customers.delete(archived.id)
    assert crm.tasks.complaints_past_sla(NOW + timedelta(days=2)) == before - 1
    [tomorrow] = crm.tasks.remind(NOW + timedelta(days=1))
    with crm.engine.connect() as conn:
        body = conn.execute(select(tables.notify_outbox.c.body).where(
            tables.notify_outbox.c.id == tomorrow.message_id)).scalar_one()
    assert "broken" not in body

    # Unmerge: a task on a moved interaction follows the interaction back.
    keep = crm.customers.add(name="Kim Kept")
    other = crm.customers.add(name="Kim Other")
    talk = crm.interactions.add(customer_id=other.id, kind="call", subject="hello", occurred_at=NOW)
    merge = crm.merges.merge(keep.id, [other.id])
    later = crm.tasks.add(customer_id=keep.id, title="after the merge", interaction_id=talk.id)
    crm.merges.unmerge(merge.merge_id)
    assert crm.tasks.get(later.id).customer_id == other.id
    assert crm.tasks.done(later.id).status.value == "done"
