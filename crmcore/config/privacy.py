"""The ``[privacy]`` table: retention policies (``crm privacy apply-retention``) and field
encryption at rest (:mod:`crmcore.store.sealed`).

    [privacy.retention]
    interactions_years = 5     # delete interactions that happened more than 5 years ago
    leads_months = 18          # erase leads with no deal created more than 18 months ago
    outbox_body_days = 90      # blank the bodies of sent or failed messages after 90 days

    [privacy.encryption]
    fields = ["email", "phone", "birthday", "custom.passport_no"]   # sealed; custom.NAME: a customer custom field
    key_env = "CRM_ENCRYPTION_KEY"       # or key_file = "/run/secrets/crm_key"; never the key itself
"""

from __future__ import annotations

from typing import Any

import attrs

from ..domain.errors import ConfigError, unknown_keys
from . import secrets
from .checks import table as _table, text as _text


@attrs.frozen
class Retention:
    """How long personal data is kept; None: no limit (the policy is not applied)."""

    interactions_years: int | None = None
    leads_months: int | None = None
    outbox_body_days: int | None = None


@attrs.frozen
class Encryption:
    """Which fields are sealed and where the keys are (one per line or comma-separated, the
    first seals, all open: see ``crm privacy rotate-key``)."""

    fields: tuple[str, ...] = ()
    key_env: str | None = None
    key_file: str | None = None

    def keys(self) -> list[str]:
        """The configured keys, first the one that seals (read now: a rotated file is picked up)."""
        text = secrets.read("key", env=self.key_env, file=self.key_file, label="[privacy.encryption]")
        if not text:
            raise ConfigError("[privacy.encryption] needs key_env = \"VARIABLE\" or key_file = \"PATH\"")
        keys = [k for k in text.replace(",", "\n").split() if k and not k.startswith("#")]
        for key in keys:  # each key on its own: a log line may hold one without the others
            secrets.register(key)
        return keys


@attrs.frozen
class PrivacySettings:
    """The ``[privacy]`` table."""

    retention: Retention = attrs.field(factory=Retention)
    encryption: Encryption = attrs.field(factory=Encryption)


RETENTION_KEYS = tuple(f.name for f in attrs.fields(Retention))


def parse_privacy(value: Any, where: str) -> PrivacySettings:
    """Validate the raw ``[privacy]`` table into :class:`PrivacySettings`."""
    table = _table(value, f"{where}: [privacy]")
    kwargs: dict[str, Any] = {}
    if "retention" in table:
        kwargs["retention"] = _retention(_table(table.pop("retention"), f"{where}: [privacy.retention]"), where)
    if "encryption" in table:
        kwargs["encryption"] = _encryption(_table(table.pop("encryption"), f"{where}: [privacy.encryption]"), where)
    if table:
        raise unknown_keys(f"{where}: [privacy]", table, ("retention", "encryption"))
    return PrivacySettings(**kwargs)


ENCRYPTION_KEYS = ("fields", "key_env", "key_file")
#: The fields that can be sealed (crmcore.store.sealed.FIELDS; config may not import store),
#: and customer custom fields as ``custom.NAME`` (checked against ``[[custom_fields]]``).
SEALABLE = ("email", "phone", "birthday")
CUSTOM = "custom."


def _encryption(table: dict[str, Any], where: str) -> Encryption:
    label = f"{where}: [privacy.encryption]"
    if "key" in table:
        raise ConfigError(f"{label} key: never put the key in the file; name the environment variable holding it "
                          f"with key_env, or a file holding it with key_file")
    unknown = set(table) - set(ENCRYPTION_KEYS)
    if unknown:
        raise unknown_keys(label, unknown, ENCRYPTION_KEYS)
    fields = table.get("fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, str) and (
            f in SEALABLE or (f.startswith(CUSTOM) and len(f) > len(CUSTOM))) for f in fields):
        raise ConfigError(f"{label} fields must be a list of {', '.join(SEALABLE)} or custom.NAME (a customer "
                          f"custom field), got {fields!r}")
    kwargs: dict[str, Any] = {"fields": tuple(dict.fromkeys(fields))}
    for key in ("key_env", "key_file"):
        if key in table:
            kwargs[key] = _text(table[key], f"{label} {key}")
    if kwargs["fields"] and not ("key_env" in kwargs or "key_file" in kwargs):
        raise ConfigError(f"{label} needs key_env = \"VARIABLE\" or key_file = \"PATH\" (the keys)")
    return Encryption(**kwargs)


_RETENTION_LIMITS = {"interactions_years": 1000, "leads_months": 12_000, "outbox_body_days": 365_000}


def _retention(table: dict[str, Any], where: str) -> Retention:
    unknown = set(table) - set(RETENTION_KEYS)
    if unknown:
        raise unknown_keys(f"{where}: [privacy.retention]", unknown, RETENTION_KEYS)
    for key, number in table.items():
        # At most a thousand years back: a cutoff before year 1 cannot be a date.
        top = _RETENTION_LIMITS[key]
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= top:
            raise ConfigError(f"{where}: [privacy.retention] {key} must be a whole number from 1 to {top}, "
                              f"got {number!r}")
    return Retention(**table)


def check_custom_fields(encryption: Encryption, declared: Any, where: str) -> None:
    """Each ``custom.NAME`` in ``fields`` must be a declared customer custom field."""
    names = {f.name for f in declared if f.entity == "customer"}
    for field in encryption.fields:
        if field.startswith(CUSTOM) and field[len(CUSTOM):] not in names:
            known = ", ".join(sorted(names)) or "none declared"
            raise ConfigError(f"{where}: [privacy.encryption] fields: {field!r} is not a customer custom field "
                              f"([[custom_fields]] with entity = \"customer\"; declared: {known})")
