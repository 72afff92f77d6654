"""The ``[jobs]`` table of ``crm.toml``: the task queue's broker (crmcore.jobs).

```toml
[jobs]
broker = "amqp://guest:guest@127.0.0.1:5672/%2F"   # or redis://...; unset: every job runs inline
queue_prefix = "crm"               # queues are PREFIX.notify, PREFIX.segments, ... (one per family)
lease = 3600                       # seconds before a running job whose worker is silent is taken over
batch = 100                        # outbox message ids per delivery job (crm notify dispatch --background)
```

``CRM_JOBS_BROKER`` in the environment overrides ``broker``; ``crm worker --broker URL`` both.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..domain.errors import ConfigError, unknown_keys
from .checks import table as _table
from .checks import text as _text

SCHEMES = ("amqp://", "amqps://", "redis://", "rediss://")
JOBS_KEYS = ("broker", "queue_prefix", "lease", "batch")


@attrs.frozen
class JobSettings:
    """What ``[jobs]`` says.

    :ivar broker: the broker URL (RabbitMQ ``amqp://`` or Redis ``redis://``); None: jobs run inline.
    :ivar queue_prefix: the start of every queue name (tests give each run its own).
    :ivar lease: seconds after which a running job is taken over by another worker (a worker on the
        same host whose process is gone is taken over at once).
    :ivar batch: message ids per delivery job.
    """

    broker: str | None = None
    queue_prefix: str = "crm"
    lease: int = 3600
    batch: int = 100


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
    if table:
        raise unknown_keys(f"{where}: [jobs]", table, JOBS_KEYS)
    return JobSettings(**kwargs)
