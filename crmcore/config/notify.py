"""The ``[notify]`` table of ``crm.toml``: templates, locales, consent policy,
unsubscribe links and triggers.

Parsed when the configuration loads, so a typo stops start-up instead of the
first campaign.  Every error names the key: ``[notify.triggers.deal_won]
templat: unknown key``.

```toml
[notify]
templates_dir = "templates"        # overrides the built-in templates, per kind
default_locale = "en"              # when the customer has none
locale_field = "locale"            # customer custom field holding the locale
channel = "smtp"                   # default channel for campaigns and triggers
unsubscribe_secret_env = "CRM_UNSUBSCRIBE_SECRET"  # HMAC key of unsubscribe tokens (or unsubscribe_secret)
unsubscribe_url = "https://example.com/unsubscribe?token={token}"

[notify.locales]                   # country -> locale when the customer has none
CN = "zh-CN"

[notify.consent]                   # default marketing policy when no decision is recorded
default = "opt-in"                 # opt-in (the customer's flags) or opt-out
sms-http = "opt-in"                # per channel

[notify.triggers.deal_won]
template = "thank-you"
```
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import attrs

from ..domain.errors import ConfigError, unknown_keys
from . import secrets
from .checks import table as _table, text as _text

POLICIES = ("opt-in", "opt-out")
TRIGGERS = ("deal_won", "tier_upgraded", "segment_entered", "birthday", "complaint")


@attrs.frozen
class Trigger:
    """One configured trigger: an event mapped to a template.

    :ivar event: one of :data:`TRIGGERS`.
    :ivar template: the template kind to render (``thank-you``).
    :ivar channel: the channel, or None for ``[notify] channel``.
    :ivar purpose: ``transactional`` or ``marketing`` (consent applies to marketing).
    :ivar strategy: ``segment_entered`` only: the segmentation strategy.
    :ivar segment: ``segment_entered`` only: the segment entered.
    :ivar tiers: ``tier_upgraded`` only: tier names from lowest to highest;
        empty means any change to a tier counts.
    :ivar response_hours: ``complaint`` only: the promised response time.
    :ivar scheme: ``tier_upgraded`` only: the loyalty scheme (None: any).
    :ivar where: where it is configured (file and table), for error messages.
    """

    event: str
    template: str
    channel: str | None = None
    purpose: str = "transactional"
    strategy: str | None = None
    segment: str | None = None
    tiers: tuple[str, ...] = ()
    response_hours: int = 24
    scheme: str | None = None
    where: str = "[notify.triggers]"


DEFAULT_PURPOSE = {"deal_won": "transactional", "tier_upgraded": "marketing", "segment_entered": "marketing",
                   "birthday": "marketing", "complaint": "transactional"}
TRIGGER_KEYS = {
    "deal_won": set(), "birthday": set(), "complaint": {"response_hours"},
    "tier_upgraded": {"tiers", "scheme"}, "segment_entered": {"strategy", "segment"},
}


@attrs.frozen
class NotifySettings:
    """The effective ``[notify]`` configuration (defaults when absent)."""

    templates_dir: str | None = None
    default_locale: str = "en"
    locale_field: str = "locale"
    locales: Mapping[str, str] = attrs.field(factory=dict)
    channel: str = "console"
    unsubscribe_secret: str | None = None
    unsubscribe_secret_env: str | None = None
    # A file holding the key (a mounted secret), read when needed (crmcore.config.secrets).
    unsubscribe_secret_file: str | None = None
    unsubscribe_url: str = "{token}"
    consent_default: str = "opt-in"
    consent_channels: Mapping[str, str] = attrs.field(factory=dict)
    triggers: tuple[Trigger, ...] = ()
    render_max_chars: int = 1_000_000
    render_timeout: float = 5.0

    def secret(self) -> str | None:
        """The unsubscribe signing key: from ``unsubscribe_secret_env`` (an
        environment variable), ``unsubscribe_secret_file`` (a file), both of which keep it
        out of crm.toml, or ``unsubscribe_secret``."""
        return secrets.read("unsubscribe_secret", value=self.unsubscribe_secret, env=self.unsubscribe_secret_env,
                            file=self.unsubscribe_secret_file, label="[notify]")

    def has_secret(self) -> bool:
        return bool(self.unsubscribe_secret_env or self.unsubscribe_secret_file or self.unsubscribe_secret)

    def policy(self, channel: str) -> str:
        """The default marketing policy of ``channel`` (opt-in or opt-out)."""
        return self.consent_channels.get(channel, self.consent_default)

    def triggers_for(self, event: str) -> list[Trigger]:
        return [t for t in self.triggers if t.event == event]


SIMPLE_KEYS = ("templates_dir", "default_locale", "locale_field", "channel", "unsubscribe_secret",
               "unsubscribe_secret_env", "unsubscribe_secret_file", "unsubscribe_url")


def parse_notify(value: Any, where: str) -> NotifySettings:
    """Validate the raw ``[notify]`` table into :class:`NotifySettings`."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [notify] must be a table")
    table = dict(value)
    kwargs: dict[str, Any] = {}
    for key in SIMPLE_KEYS:
        if key in table:
            kwargs[key] = _text(table.pop(key), f"{where}: [notify] {key}")
    if "unsubscribe_url" in kwargs and "{token}" not in kwargs["unsubscribe_url"]:
        raise ConfigError(f"{where}: [notify] unsubscribe_url must contain {{token}}")
    if "locales" in table:
        kwargs["locales"] = {k.upper(): _text(v, f"{where}: [notify.locales] {k}")
                             for k, v in _table(table.pop("locales"), f"{where}: [notify.locales]").items()}
    if "consent" in table:
        consent = _table(table.pop("consent"), f"{where}: [notify.consent]")
        for channel, policy in consent.items():
            if policy not in POLICIES:
                raise ConfigError(f"{where}: [notify.consent] {channel}: must be opt-in or opt-out, got {policy!r}")
        kwargs["consent_default"] = consent.pop("default", "opt-in")
        kwargs["consent_channels"] = consent
    if "triggers" in table:
        kwargs["triggers"] = _triggers(table.pop("triggers"), where)
    if "render_max_chars" in table:
        chars = table.pop("render_max_chars")
        if isinstance(chars, bool) or not isinstance(chars, int) or chars <= 0:
            raise ConfigError(f"{where}: [notify] render_max_chars must be a positive whole number, got {chars!r}")
        kwargs["render_max_chars"] = chars
    if "render_timeout" in table:
        seconds = table.pop("render_timeout")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
            raise ConfigError(f"{where}: [notify] render_timeout must be a positive number of seconds, got {seconds!r}")
        kwargs["render_timeout"] = float(seconds)
    if table:
        raise unknown_keys(f"{where}: [notify]", table, (*SIMPLE_KEYS, "locales", "consent", "triggers",
                                                         "render_max_chars", "render_timeout"))
    return NotifySettings(**kwargs)


def _triggers(value: Any, where: str) -> tuple[Trigger, ...]:
    triggers = []
    for event, entries in _table(value, f"{where}: [notify.triggers]").items():
        if event not in TRIGGERS:
            close = difflib.get_close_matches(event, TRIGGERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: [notify.triggers] unknown event {event!r}{hint} (known: {', '.join(TRIGGERS)})")
        # segment_entered may be a list of tables ([[notify.triggers.segment_entered]]).
        for i, entry in enumerate(entries if isinstance(entries, list) else [entries], 1):
            label = f"{where}: [notify.triggers.{event}]" + (f"[{i}]" if isinstance(entries, list) else "")
            triggers.append(_trigger(event, _table(entry, label), label))
    return tuple(triggers)


def _trigger(event: str, entry: dict[str, Any], label: str) -> Trigger:
    allowed = {"template", "channel", "purpose"} | TRIGGER_KEYS[event]
    unknown = set(entry) - allowed
    if unknown:
        raise unknown_keys(label, unknown, allowed)
    if "template" not in entry:
        raise ConfigError(f"{label} needs template = \"KIND\"")
    kwargs: dict[str, Any] = {"event": event, "template": _text(entry["template"], f"{label} template"),
                              "purpose": entry.get("purpose", DEFAULT_PURPOSE[event]), "where": label}
    if kwargs["purpose"] not in ("transactional", "marketing"):
        raise ConfigError(f"{label} purpose must be transactional or marketing, got {kwargs['purpose']!r}")
    for key in ("channel", "strategy", "segment", "scheme"):
        if key in entry:
            kwargs[key] = _text(entry[key], f"{label} {key}")
    if event == "segment_entered" and not ("strategy" in kwargs and "segment" in kwargs):
        raise ConfigError(f"{label} needs strategy and segment")
    if "tiers" in entry:
        tiers = entry["tiers"]
        if not isinstance(tiers, list) or not all(isinstance(t, str) for t in tiers):
            raise ConfigError(f"{label} tiers must be a list of tier names, lowest first")
        kwargs["tiers"] = tuple(tiers)
    if "response_hours" in entry:
        hours = entry["response_hours"]
        if isinstance(hours, bool) or not isinstance(hours, int) or hours <= 0:
            raise ConfigError(f"{label} response_hours must be a positive whole number, got {hours!r}")
        kwargs["response_hours"] = hours
    return Trigger(**kwargs)

