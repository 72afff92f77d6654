"""The ``[jobs]`` table of ``crm.toml``: the task queue's broker (crmcore.jobs).

```toml
[jobs]
broker = "amqp://guest:guest@127.0.0.1:5672/%2F"   # or redis://...; unset: every job runs inline
queue_prefix = "crm"               # queues are PREFIX.notify, PREFIX.segments, ... (one per family)
lease = 3600                       # seconds before a running job whose worker is silent is taken over
batch = 100                        # outbox message ids per delivery job (crm notify dispatch --background)

[jobs.reports.weekly-pipeline]     # a scheduled report: rendered by `crm scheduler` once per period
report = "pipeline"                # the report (default: the table's name)
every = "week"                     # day, week (ISO, from Monday) or month, in crm.toml's timezone
format = "csv"                     # a renderer (default: csv)
output = "/shared/reports/pipeline-{period}.csv"   # {period}: 2026-07-01, 2026-W27 or 2026-07
channel = "smtp"                   # and/or sent through a channel's outbox ...
to = "sales-lead@example.com"      # ... to this recipient
options = { pipeline = "default" } # the report's options (filters)
```

``CRM_JOBS_BROKER`` in the environment overrides ``broker``; ``crm worker --broker URL`` both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..domain.errors import ConfigError, unknown_keys
from .checks import table as _table
from .checks import text as _text

SCHEMES = ("amqp://", "amqps://", "redis://", "rediss://")
JOBS_KEYS = ("broker", "queue_prefix", "lease", "batch", "reports")
REPORT_KEYS = ("report", "every", "format", "output", "channel", "to", "options")
PERIODS = ("day", "week", "month")


@attrs.frozen
class ScheduledReport:
    """A ``[jobs.reports.NAME]`` table: a report the scheduler renders once per period.

    :ivar name: the schedule's name (the table's).
    :ivar report: the report to run.
    :ivar every: ``day``, ``week`` or ``month``.
    :ivar format: the renderer.
    :ivar output: a file path; ``{period}`` in it becomes the period's key.
    :ivar channel: a notification channel to send the rendered report through (its outbox).
    :ivar to: the recipient on ``channel``.
    :ivar options: the report's options.
    """

    name: str
    report: str
    every: str = "day"
    format: str = "csv"
    output: str | None = None
    channel: str | None = None
    to: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class JobSettings:
    """What ``[jobs]`` says.

    :ivar broker: the broker URL (RabbitMQ ``amqp://`` or Redis ``redis://``); None: jobs run inline.
    :ivar queue_prefix: the start of every queue name (tests give each run its own).
    :ivar lease: seconds after which a running job is taken over by another worker (a worker on the
        same host whose process is gone is taken over at once).
    :ivar batch: message ids per delivery job.
    :ivar reports: the scheduled reports (``[jobs.reports.NAME]``), by name.
    """

    broker: str | None = None
    queue_prefix: str = "crm"
    lease: int = 3600
    batch: int = 100
    reports: Mapping[str, ScheduledReport] = attrs.field(factory=dict)


def check_broker(url: str, label: str) -> str:
    """``url`` if it names a supported broker, else a ConfigError naming ``label``."""
    if not url.startswith(SCHEMES):
        raise ConfigError(f"{label} must be an amqp:// (RabbitMQ) or redis:// URL, got {url!r}")
    return url


def parse_jobs(value: Any, where: str) -> JobSettings:
    """Validate the raw ``[jobs]`` table into :class:`JobSettings`."""
    table = _table(value, f"{where}: [jobs]")
    kwargs: dict[str, Any] = {}
    if "broker" in table:
        kwargs["broker"] = check_broker(_text(table.pop("broker"), f"{where}: [jobs] broker"),
                                        f"{where}: [jobs] broker")
    if "queue_prefix" in table:
        kwargs["queue_prefix"] = _text(table.pop("queue_prefix"), f"{where}: [jobs] queue_prefix")
    for key in ("lease", "batch"):
        if key in table:
            number = table.pop(key)
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ConfigError(f"{where}: [jobs] {key} must be a positive whole number, got {number!r}")
            kwargs[key] = number
    if "reports" in table:
        reports = _table(table.pop("reports"), f"{where}: [jobs.reports]")
        kwargs["reports"] = {name: parse_scheduled_report(name, value, where) for name, value in reports.items()}
    if table:
        raise unknown_keys(f"{where}: [jobs]", table, JOBS_KEYS)
    return JobSettings(**kwargs)


def parse_scheduled_report(name: str, value: Any, where: str) -> ScheduledReport:
    """Validate one ``[jobs.reports.NAME]`` table."""
    label = f"{where}: [jobs.reports.{name}]"
    table = _table(value, label)
    kwargs: dict[str, Any] = {"name": name, "report": name}
    for key in ("report", "format", "output", "channel", "to"):
        if key in table:
            kwargs[key] = _text(table.pop(key), f"{label} {key}")
    if "every" in table:
        every = table.pop("every")
        if every not in PERIODS:
            raise ConfigError(f"{label} every must be one of {', '.join(PERIODS)}, got {every!r}")
        kwargs["every"] = every
    if "options" in table:
        kwargs["options"] = _table(table.pop("options"), f"{label} options")
    if table:
        raise unknown_keys(label, table, REPORT_KEYS)
    if "output" not in kwargs and "channel" not in kwargs:
        raise ConfigError(f"{label} needs an output file, a channel (with to), or both")
    if ("channel" in kwargs) != ("to" in kwargs):
        raise ConfigError(f"{label} channel and to go together (the channel and its recipient)")
    return ScheduledReport(**kwargs)
