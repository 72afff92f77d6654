"""The scheduler: fires the daily jobs once per period, however many schedulers run.

Each daily job's run for one day is a ``jobs`` row with the unique ``run_key``
``schedule:NAME:YYYY-MM-DD`` (the day in ``timezone`` of crm.toml).  Every scheduler inserts it
with insert-if-absent: the database lets one insert win, and only the winner submits the job
(to the queue, or inline without a broker).  ``--as-of`` picks the day, as for the jobs themselves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .engine import Jobs

#: name -> job kind, in the order they fire each day (points expire before tiers are evaluated).
DAILY: tuple[tuple[str, str], ...] = (
    ("birthday-greetings", "notify.run_scheduled"),
    ("points-expiry", "loyalty.expire"),
    ("tier-evaluation", "loyalty.run"),
)


def fire(jobs: Jobs, as_of: datetime) -> list[dict[str, Any]]:
    """Submit each daily job of ``as_of``'s day unless some scheduler already did; returns one row
    per job: ``{"job": NAME, "period": DAY, "fired": bool, "id": job id or None}``."""
    day = as_of.astimezone(ZoneInfo(jobs.crm.config.timezone)).date().isoformat()
    rows = []
    for name, kind in DAILY:
        job = jobs.submit(kind, {"as_of": as_of.isoformat()}, run_key=f"schedule:{name}:{day}")
        rows.append({"job": name, "period": day, "fired": job is not None, "id": job["id"] if job else None,
                     "status": job["status"] if job else None})
    return rows
