"""The ``[tasks]`` table of ``crm.toml``: follow-up tasks made automatically, the complaint SLA, reminders.

```toml
[tasks]
complaint_sla_hours = 24      # a complaint's task is due this many hours after the complaint
complaint_tasks = true        # every complaint interaction makes a task (the SLA's clock)
follow_up_tasks = true        # an interaction with follow_up_due makes a follow-up task
reminder_channel = "wecom"    # crm task remind sends through this channel (default: [notify] channel)
```
"""

from __future__ import annotations

from typing import Any

import attrs

from ..domain.errors import ConfigError, unknown_keys
from .checks import table as _table
from .checks import text as _text


@attrs.frozen
class TaskSettings:
    """The ``[tasks]`` table (see the module documentation for each key)."""

    complaint_sla_hours: int = 24
    complaint_tasks: bool = True
    follow_up_tasks: bool = True
    reminder_channel: str | None = None


def parse_tasks(value: Any, where: str) -> TaskSettings:
    """Validate the ``[tasks]`` table; every error names the file, the table and the key."""
    label = f"{where}: [tasks]"
    raw = _table(value, label)
    known = [f.name for f in attrs.fields(TaskSettings)]
    if set(raw) - set(known):
        raise unknown_keys(label, set(raw) - set(known), known)
    kwargs: dict[str, Any] = {}
    if "complaint_sla_hours" in raw:
        hours = raw["complaint_sla_hours"]
        if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= 24 * 365:
            raise ConfigError(f"{label} complaint_sla_hours must be a whole number of hours from 1 to 8760, "
                              f"got {hours!r}")
        kwargs["complaint_sla_hours"] = hours
    for key in ("complaint_tasks", "follow_up_tasks"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise ConfigError(f"{label} {key} must be true or false, got {raw[key]!r}")
            kwargs[key] = raw[key]
    if "reminder_channel" in raw:
        kwargs["reminder_channel"] = _text(raw["reminder_channel"], f"{label} reminder_channel")
    return TaskSettings(**kwargs)
