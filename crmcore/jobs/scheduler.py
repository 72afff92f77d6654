"""The scheduler: fires the daily jobs and the scheduled reports once per period, however many
schedulers run.

Each job's run for one period is a ``jobs`` row with the unique ``run_key``
``schedule:NAME:PERIOD``: the daily jobs' period is the day in ``timezone`` of crm.toml
(``2026-07-01``); a scheduled report's (``[jobs.reports.NAME]``) is its day, ISO week
(``2026-W27``) or month (``2026-07``), keyed ``schedule:report:NAME:PERIOD``.  Every scheduler
inserts the row with insert-if-absent: the database lets one insert win, and only the winner
submits the job (to the queue, or inline without a broker).  ``--as-of`` picks the moment, as for
the jobs themselves.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..config.jobs import ScheduledReport
from .engine import Jobs

#: name -> job kind, in the order they fire each day (points expire before tiers are evaluated).
DAILY: tuple[tuple[str, str], ...] = (
    ("birthday-greetings", "notify.run_scheduled"),
    ("points-expiry", "loyalty.expire"),
    ("tier-evaluation", "loyalty.run"),
)


def period_key(day: date, every: str) -> str:
    """The key of the period ``day`` falls in: ``2026-07-01``, ``2026-W27`` (ISO week) or ``2026-07``."""
    if every == "day":
        return day.isoformat()
    if every == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if every == "month":
        return f"{day:%Y-%m}"
    raise ValueError(f"unknown period {every!r}")


def check_reports(jobs: Jobs) -> None:
    """Every scheduled report names a report, a renderer and a channel that exist (an
    UnknownComponent naming the known ones otherwise), before anything fires."""
    crm = jobs.crm
    for schedule in crm.config.jobs.reports.values():
        crm.reports.registry.get(schedule.report)
        crm.reports.renderers.get(schedule.format)
        if schedule.channel is not None:
            crm.notify.registry.get(schedule.channel)


def fire(jobs: Jobs, as_of: datetime) -> list[dict[str, Any]]:
    """Submit each daily job of ``as_of``'s day and each scheduled report of its period unless some
    scheduler already did; returns one row per job:
    ``{"job": NAME, "period": KEY, "fired": bool, "id": job id or None, "status": ...}``."""
    check_reports(jobs)
    day = as_of.astimezone(ZoneInfo(jobs.crm.config.timezone)).date()
    rows = []
    for name, kind in DAILY:
        job = jobs.submit(kind, {"as_of": as_of.isoformat()}, run_key=f"schedule:{name}:{day.isoformat()}")
        rows.append(_row(name, day.isoformat(), job))
    for schedule in jobs.crm.config.jobs.reports.values():
        period = period_key(day, schedule.every)
        job = jobs.submit("reports.scheduled", report_args(schedule, period, as_of),
                          run_key=f"schedule:report:{schedule.name}:{period}")
        rows.append(_row(f"report:{schedule.name}", period, job))
    return rows


def report_args(schedule: ScheduledReport, period: str, as_of: datetime) -> dict[str, Any]:
    """The ``reports.scheduled`` job's arguments for one period of ``schedule``."""
    return {"schedule": schedule.name, "name": schedule.report, "period": period, "format": schedule.format,
            "output": schedule.output.replace("{period}", period) if schedule.output else None,
            "channel": schedule.channel, "to": schedule.to, "options": dict(schedule.options),
            "as_of": as_of.isoformat()}


def _row(name: str, period: str, job: dict[str, Any] | None) -> dict[str, Any]:
    return {"job": name, "period": period, "fired": job is not None, "id": job["id"] if job else None,
            "status": job["status"] if job else None}
