"""The ``[privacy]`` table: retention policies (``crm privacy apply-retention``).

    [privacy.retention]
    interactions_years = 5     # delete interactions that happened more than 5 years ago
    leads_months = 18          # erase leads with no deal created more than 18 months ago
    outbox_body_days = 90      # blank the bodies of sent or failed messages after 90 days
"""

from __future__ import annotations

from typing import Any

import attrs

from ..domain.errors import ConfigError, unknown_keys
from .checks import table as _table


@attrs.frozen
class Retention:
    """How long personal data is kept; None: no limit (the policy is not applied)."""

    interactions_years: int | None = None
    leads_months: int | None = None
    outbox_body_days: int | None = None


@attrs.frozen
class PrivacySettings:
    """The ``[privacy]`` table."""

    retention: Retention = attrs.field(factory=Retention)


RETENTION_KEYS = tuple(f.name for f in attrs.fields(Retention))


def parse_privacy(value: Any, where: str) -> PrivacySettings:
    """Validate the raw ``[privacy]`` table into :class:`PrivacySettings`."""
    table = _table(value, f"{where}: [privacy]")
    kwargs: dict[str, Any] = {}
    if "retention" in table:
        kwargs["retention"] = _retention(_table(table.pop("retention"), f"{where}: [privacy.retention]"), where)
    if table:
        raise unknown_keys(f"{where}: [privacy]", table, ("retention",))
    return PrivacySettings(**kwargs)


def _retention(table: dict[str, Any], where: str) -> Retention:
    unknown = set(table) - set(RETENTION_KEYS)
    if unknown:
        raise unknown_keys(f"{where}: [privacy.retention]", unknown, RETENTION_KEYS)
    for key, number in table.items():
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= 10_000:
            raise ConfigError(f"{where}: [privacy.retention] {key} must be a whole number from 1 to 10000, "
                              f"got {number!r}")
    return Retention(**table)
