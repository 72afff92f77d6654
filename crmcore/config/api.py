"""The ``[api]`` table of ``crm.toml``: public lead-capture forms and signed inbound webhooks.

Parsed when the configuration loads, so a typo stops start-up instead of the
first visitor: every error names the file, the table and the key
(``crm.toml: [api.forms.contact] feilds: unknown key (did you mean 'fields'?)``).

```toml
[api]
rate_limit_storage = "redis://127.0.0.1:6379/0"   # default "memory://" (one process)
max_upload = "64M"                   # the largest file POST /imports/KIND accepts (bytes, or K, M, G)

[api.forms.contact]                  # POST /forms/contact (public)
fields = { email = "email", name = "name", company = "attributes.company", message = "interaction.body" }
required = ["email"]
consent = { marketing = "newsletter" }   # a ticked "newsletter" box grants marketing (every channel)
interaction = { kind = "message", subject = "Contact form: {topic}" }
source = "form:contact"              # the default
owner = "rita"                       # new leads belong to rita
rate_limit = "10/minute"             # per client address
redirect = "https://example.com/thanks"  # 303 there after a browser post (else JSON 201)
honeypot = "website"                 # a field people never fill: a bot that does gets 201, nothing stored

[api.webhooks.shop]                  # POST /webhooks/shop (X-CRM-Signature)
secret_env = "CRM_WEBHOOK_SHOP_SECRET"   # the shared secret lives in the environment, never here
tolerance = 300                      # seconds a signature's timestamp may be off
fields = { "customer.email" = "email", "customer.name" = "name", "order.note" = "interaction.body" }
event_id = "id"                      # redelivering an event with this id is harmless
```

A field maps to a customer field (``email``, ``name``, ``phone``, ...), a
customer custom field (``attributes.X``) or the interaction every capture
adds (``interaction.subject``, ``interaction.body``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

import attrs

from ..domain.errors import ConfigError, unknown_keys
from . import secrets
from .checks import table as _table, text as _text

#: The customer fields a form or webhook may fill (the rest are the CRM's to set).
CUSTOMER_TARGETS = ("name", "email", "phone", "country", "region", "city", "industry", "birthday",
                    "external_id", "kind")
INTERACTION_TARGETS = ("interaction.subject", "interaction.body", "interaction.outcome")
INTERACTION_KINDS = ("call", "email", "meeting", "visit", "message", "note", "complaint", "feedback")
PURPOSES = ("marketing", "transactional")
EVERY_CHANNEL = "*"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


@attrs.frozen
class Capture:
    """What one form or webhook captures: the part they share.

    :ivar name: the form's or webhook's name (its URL path segment).
    :ivar fields: incoming field (a webhook: a dotted payload path) -> target
        (a customer field, ``attributes.X`` or ``interaction.subject``/``body``/``outcome``).
    :ivar required: incoming fields that must be present and non-empty.
    :ivar consent: ``(purpose, channel, field)``: a ticked ``field`` grants ``purpose`` on
        ``channel`` (``*``: every channel).
    :ivar kind: the interaction's kind (``message``); its direction is always inbound.
    :ivar subject: the interaction's subject template (``{field}`` placeholders name incoming
        fields; ``{form}`` is the name); None: ``"<source>"``.
    :ivar source: recorded as the new customer's source and every consent decision's source.
    :ivar owner: the login new leads are assigned to (None: nobody).
    :ivar act_as: the login the capture acts as (None: the built-in ``system`` actor).
    """

    name: str
    fields: Mapping[str, str]
    required: tuple[str, ...] = ()
    consent: tuple[tuple[str, str, str], ...] = ()
    kind: str = "message"
    subject: str | None = None
    source: str = ""
    owner: str | None = None
    act_as: str | None = None

    def target_of(self, field: str) -> str | None:
        """What an incoming field fills."""
        return self.fields.get(field)

    def incoming_of(self, target: str) -> str:
        """The incoming field that fills ``target`` (for error messages); the target itself if none."""
        for field, mapped in self.fields.items():
            if mapped == target:
                return field
        return target


@attrs.frozen
class FormSettings(Capture):
    """One ``[api.forms.NAME]`` table.

    :ivar rate_limit: ``"10/minute"`` per client address (None: no limit).
    :ivar redirect: where a browser post is sent (303) after capture; None: JSON 201.
    :ivar honeypot: a field hidden from people: a post that fills it is a bot's (answered as a
        success, nothing stored).
    """

    rate_limit: str | None = "10/minute"
    redirect: str | None = None
    honeypot: str | None = None


@attrs.frozen
class WebhookSettings(Capture):
    """One ``[api.webhooks.NAME]`` table.

    :ivar secret_env: the environment variable holding the shared HMAC secret.
    :ivar tolerance: how many seconds a signature's timestamp may differ from now.
    :ivar event_id: the payload path whose value identifies an event (None: no deduplication).
    """

    secret_env: str = ""
    secret_file: str = ""
    tolerance: int = 300
    event_id: str | None = None

    def secret(self) -> bytes:
        """The shared secret, read from the environment or the file when a delivery arrives (so it
        can rotate, and never sits in crm.toml)."""
        value = secrets.read("secret", env=self.secret_env or None, file=self.secret_file or None,
                             label=f"[api.webhooks.{self.name}]")
        assert value is not None, "a webhook has secret_env or secret_file (checked when read)"
        return value.encode()


@attrs.frozen
class ApiSettings:
    """The effective ``[api]`` configuration (no forms, no webhooks when absent)."""

    rate_limit_storage: str = "memory://"
    #: The largest upload ``POST /imports/KIND`` accepts, in bytes (413 beyond it).
    max_upload: int = 64 * 1024 * 1024
    forms: Mapping[str, FormSettings] = attrs.field(factory=dict)
    webhooks: Mapping[str, WebhookSettings] = attrs.field(factory=dict)
    #: Where the API token pepper is (an environment variable, a file): a secret mixed into each
    #: stored token hash (HMAC), so a copy of the database alone cannot test guessed tokens.
    token_pepper_env: str | None = None
    token_pepper_file: str | None = None

    def token_pepper(self) -> bytes | None:
        """The pepper (read when needed, so it can rotate with the environment), or None."""
        value = secrets.read("token_pepper", env=self.token_pepper_env, file=self.token_pepper_file,
                             label="[api]")
        return None if value is None else value.encode("utf-8")


CAPTURE_KEYS = ("fields", "required", "consent", "interaction", "source", "owner", "act_as")
FORM_KEYS = (*CAPTURE_KEYS, "rate_limit", "redirect", "honeypot")
WEBHOOK_KEYS = (*CAPTURE_KEYS, "secret_env", "secret_file", "tolerance", "event_id")
API_KEYS = ("rate_limit_storage", "max_upload", "forms", "webhooks", "token_pepper_env", "token_pepper_file")
STORAGE_SCHEMES = ("memory://", "redis://", "rediss://", "redis+unix://", "redis+sentinel://", "redis+cluster://")


def parse_api(value: Any, where: str) -> ApiSettings:
    """Validate the raw ``[api]`` table into :class:`ApiSettings`."""
    table = _table(value, f"{where}: [api]")
    kwargs: dict[str, Any] = {}
    if "rate_limit_storage" in table:
        storage = _text(table.pop("rate_limit_storage"), f"{where}: [api] rate_limit_storage")
        if not storage.startswith(STORAGE_SCHEMES):
            raise ConfigError(f"{where}: [api] rate_limit_storage must be memory:// or a redis:// URL, "
                              f"got {storage!r}")
        kwargs["rate_limit_storage"] = storage
    if "max_upload" in table:
        kwargs["max_upload"] = _size(table.pop("max_upload"), f"{where}: [api] max_upload")
    if "token_pepper" in table:
        raise ConfigError(f"{where}: [api] token_pepper: never put the pepper in the file; name the environment "
                          f"variable holding it with token_pepper_env, or a file with token_pepper_file")
    for key in ("token_pepper_env", "token_pepper_file"):
        if key in table:
            kwargs[key] = _text(table.pop(key), f"{where}: [api] {key}")
    if "forms" in table:
        kwargs["forms"] = {name: _form(name, entry, f"{where}: [api.forms.{name}]")
                           for name, entry in _named(table.pop("forms"), f"{where}: [api.forms]").items()}
    if "webhooks" in table:
        kwargs["webhooks"] = {name: _webhook(name, entry, f"{where}: [api.webhooks.{name}]")
                              for name, entry in _named(table.pop("webhooks"), f"{where}: [api.webhooks]").items()}
    if table:
        raise unknown_keys(f"{where}: [api]", table, API_KEYS)
    return ApiSettings(**kwargs)


def _size(value: Any, label: str) -> int:
    """A size in bytes: an integer, or text with K, M or G (binary units: ``"64M"``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", value, re.I) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"{label} must be a positive number of bytes or a size such as \"64M\", got {value!r}")
    size: int = int(match.group(1)) * 1024 ** " KMG".index(match.group(2).upper() or " ")
    return size


def _named(value: Any, label: str) -> dict[str, dict[str, Any]]:
    tables = _table(value, label)
    for name, entry in tables.items():
        if not _NAME.match(name):
            raise ConfigError(f"{label} {name!r}: a name is letters, digits, '_', '-' and '.' (it is a URL segment)")
        tables[name] = _table(entry, f"{label[:-1]}.{name}]")
    return tables


def _capture(name: str, table: dict[str, Any], label: str, kind: str) -> dict[str, Any]:
    """The keys forms and webhooks share (popped from ``table``)."""
    if "fields" not in table:
        raise ConfigError(f"{label} needs fields = {{ incoming = \"email\", ... }}")
    fields = {}
    for field, target in _table(table.pop("fields"), f"{label} fields").items():
        target = _text(target, f"{label} fields.{field}")
        if not (target in CUSTOMER_TARGETS or target in INTERACTION_TARGETS
                or (target.startswith("attributes.") and len(target) > len("attributes."))):
            raise unknown_keys(f"{label} fields.{field}:", [target], (*CUSTOMER_TARGETS, *INTERACTION_TARGETS,
                                                                      "attributes.NAME"), "target")
        fields[field] = target
    targets = list(fields.values())
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise ConfigError(f"{label} fields: {', '.join(repeated)} filled by more than one field")
    if "email" not in targets and "phone" not in targets:
        raise ConfigError(f"{label} fields must map a field to email or phone (to find the customer)")
    kwargs: dict[str, Any] = {"name": name, "fields": fields, "source": f"{kind}:{name}"}
    if "required" in table:
        required = table.pop("required")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ConfigError(f"{label} required must be a list of field names, got {required!r}")
        for field in required:
            if field not in fields:
                raise unknown_keys(f"{label} required:", [field], fields, "field")
        kwargs["required"] = tuple(required)
    if "consent" in table:
        kwargs["consent"] = _consent(table.pop("consent"), f"{label} consent")
    if "interaction" in table:
        kwargs.update(_interaction(table.pop("interaction"), fields, f"{label} interaction"))
    for key in ("source", "owner", "act_as"):
        if key in table:
            kwargs[key] = _text(table.pop(key), f"{label} {key}")
    return kwargs


def _consent(value: Any, label: str) -> tuple[tuple[str, str, str], ...]:
    """``{ marketing = "newsletter", "marketing:sms" = "texts" }``: purpose[:channel] -> field."""
    found = []
    for key, field in _table(value, label).items():
        purpose, _, channel = key.partition(":")
        if purpose not in PURPOSES:
            raise unknown_keys(f"{label}:", [key], PURPOSES, "purpose")
        found.append((purpose, channel or EVERY_CHANNEL, _text(field, f"{label}.{key}")))
    return tuple(found)


def _interaction(value: Any, fields: Mapping[str, str], label: str) -> dict[str, Any]:
    table = _table(value, label)
    kwargs: dict[str, Any] = {}
    if "kind" in table:
        kind = _text(table.pop("kind"), f"{label} kind")
        if kind not in INTERACTION_KINDS:
            raise unknown_keys(f"{label} kind:", [kind], INTERACTION_KINDS, "interaction kind")
        kwargs["kind"] = kind
    if "direction" in table:  # accepted for clarity; a capture is what came in
        if table.pop("direction") != "inbound":
            raise ConfigError(f"{label} direction: a captured interaction is always inbound")
    if "subject" in table:
        subject = _text(table.pop("subject"), f"{label} subject")
        try:
            names = [n for _, n, spec, conv in string.Formatter().parse(subject) if n is not None]
        except ValueError as exc:
            raise ConfigError(f"{label} subject: {exc}") from None
        for name in names:
            # Only plain names: the template comes from the file, the values from strangers.
            if name not in fields and name not in ("form", "source"):
                raise unknown_keys(f"{label} subject: placeholder", [name], (*fields, "form", "source"),
                                   "field")
        kwargs["subject"] = subject
    if table:
        raise unknown_keys(f"{label}", table, ("kind", "direction", "subject"))
    return kwargs


def _form(name: str, value: dict[str, Any], label: str) -> FormSettings:
    table = dict(value)
    if set(table) - set(FORM_KEYS):
        raise unknown_keys(label, set(table) - set(FORM_KEYS), FORM_KEYS)
    kwargs = _capture(name, table, label, "form")
    if "rate_limit" in table:
        rate = table.pop("rate_limit")
        if rate is False or rate == "none":
            kwargs["rate_limit"] = None
        else:
            rate = _text(rate, f"{label} rate_limit")
            import limits  # here: only a configured form's rate needs it, and importing it costs ~20 ms

            try:
                parsed = limits.parse(rate)
            except ValueError:
                parsed = None
            if parsed is None or parsed.amount <= 0:
                raise ConfigError(f"{label} rate_limit must be like \"10/minute\" or \"100 per hour\", got {rate!r}")
            kwargs["rate_limit"] = rate
    if "redirect" in table:  # where the site's own thank-you page is (the operator's, never the poster's)
        redirect = _text(table.pop("redirect"), f"{label} redirect")
        if not redirect.startswith(("https://", "http://", "/")):
            raise ConfigError(f"{label} redirect must be an http(s) URL or a path, got {redirect!r}")
        kwargs["redirect"] = redirect
    if "honeypot" in table:
        honeypot = _text(table.pop("honeypot"), f"{label} honeypot")
        if honeypot in kwargs["fields"]:
            raise ConfigError(f"{label} honeypot {honeypot!r} is also a mapped field")
        kwargs["honeypot"] = honeypot
    if table:
        raise unknown_keys(label, table, FORM_KEYS)
    return FormSettings(**kwargs)


def _webhook(name: str, value: dict[str, Any], label: str) -> WebhookSettings:
    table = dict(value)
    if "secret" in table:
        raise ConfigError(f"{label} secret: never put the secret in the file; name the environment variable "
                          f"holding it with secret_env, or a file holding it with secret_file")
    if set(table) - set(WEBHOOK_KEYS):
        raise unknown_keys(label, set(table) - set(WEBHOOK_KEYS), WEBHOOK_KEYS)
    kwargs = _capture(name, table, label, "webhook")
    if "secret_env" not in table and "secret_file" not in table:
        raise ConfigError(f"{label} needs secret_env = \"VARIABLE\" (the environment variable with the secret) "
                          f"or secret_file = \"PATH\" (a file holding it)")
    for key in ("secret_env", "secret_file"):
        if key in table:
            kwargs[key] = _text(table.pop(key), f"{label} {key}")
    if "tolerance" in table:
        tolerance = table.pop("tolerance")
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 0 < tolerance <= 86400:
            raise ConfigError(f"{label} tolerance must be whole seconds from 1 to 86400, got {tolerance!r}")
        kwargs["tolerance"] = tolerance
    if "event_id" in table:
        kwargs["event_id"] = _text(table.pop("event_id"), f"{label} event_id")
    if table:
        raise unknown_keys(label, table, WEBHOOK_KEYS)
    return WebhookSettings(**kwargs)

