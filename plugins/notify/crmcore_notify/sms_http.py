"""The ``sms-http`` channel: SMS through a provider's HTTP API.

Configured, not coded, per provider: the URL, method, authentication and a
request body template.  The template is Jinja2 in a sandboxed environment
with strict undefined variables (a typo is an error, never a blank), and gets:

``to``         the recipient in E.164 (``+8613800138000``),
``text``       the message body,
``sender``     the configured sender id or number,
``message_id`` / ``key``  the outbox id and idempotency key,
``encoding`` / ``segments``  GSM-7 or UCS-2 and the segment count.

JSON APIs (the default, ``content_type = "application/json"``)::

    body_template = '{"to": {{ to|tojson }}, "from": {{ sender|tojson }}, "text": {{ text|tojson }}}'

Form-encoded APIs (Twilio-style: basic auth, form fields)::

    content_type = "application/x-www-form-urlencoded"
    body_template = "To={{ to|urlencode }}&From={{ sender|urlencode }}&Body={{ text|urlencode }}"

Recipients are parsed with phonenumbers (``default_region`` for numbers
written without ``+``); a number that is not valid is a permanent failure.
The encoding and segment count are recorded on the message (``delivery``),
and a text longer than ``max_segments`` is refused before it costs anything.

Presets for the large Chinese providers (``preset = "aliyun"`` or ``"tencent"``) send the
provider's signed template request instead of ``body_template``: see
:mod:`crmcore_notify.sms_presets`.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import phonenumbers

import crmcore

from .channel_secrets import channel_secret
from .httpcalls import ClientPerThread, provider_id, request
from .sms_presets import DEFAULT_PARAMS, PRESETS
from .sms_presets import check_options as check_preset
from .sms_presets import send as send_preset
from .smslength import sms_length

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

DEFAULT_TEMPLATE = '{"to": {{ to|tojson }}, "from": {{ sender|tojson }}, "text": {{ text|tojson }}}'
METHODS = ("POST", "PUT")
@functools.cache
def _templates() -> SandboxedEnvironment:
    """The sandbox templates render in, made on first use: the plugin loads with every command,
    and importing Jinja2 cost each one's start-up about 20 ms."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def _template(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    from jinja2 import TemplateSyntaxError

    try:
        _templates().from_string(value)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{attribute.name}: template syntax error on line {exc.lineno}: {exc.message}") from None


def _method(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in METHODS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(METHODS)}, got {value!r}")


def _http_url(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL, got {value!r}")


def _preset(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and value not in PRESETS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(PRESETS)}, got {value!r}")


def _region(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{attribute.name}: unknown region {value!r} (use a two-letter code like CN or US)")


# The validator serves int and float fields (attrs.Attribute is invariant).
_Number = TypeVar("_Number", int, float)


def _positive(instance: object, attribute: attrs.Attribute[_Number], value: _Number) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class SmsHttpOptions:
    """Options of the ``sms-http`` channel (``[channels.sms-http]``).

    :ivar url: the provider's send endpoint (required).
    :ivar method: ``POST`` or ``PUT``.
    :ivar body_template: the request body (Jinja2, sandboxed; see the module docstring).
    :ivar content_type: the body's media type.
    :ivar sender: sender id or number (``sender`` in the template).
    :ivar username: HTTP basic auth user; with ``password`` / ``password_env``.
    :ivar password: basic auth password; prefer ``password_env``.
    :ivar password_env: environment variable holding the basic auth password.
    :ivar password_file: a file holding the basic auth password (a mounted secret).
    :ivar token_env: environment variable holding a bearer token.
    :ivar headers: extra request headers.
    :ivar default_region: region for numbers written without ``+`` (e.g. ``CN``).
    :ivar max_segments: refuse texts needing more segments than this.
    :ivar provider_id_field: dotted path of the message id in the JSON response.
    :ivar timeout: seconds for connecting and for the response.
    :ivar refuse_private: refuse a ``url`` that resolves to a private, loopback
        or link-local address (checked when connecting).
    :ivar preset: ``aliyun`` or ``tencent``: the provider's signed template API instead of
        ``body_template`` (``url`` defaults to the provider's endpoint).
    :ivar access_key_id: the preset's AccessKey ID (Aliyun) or SecretId (Tencent Cloud).
    :ivar access_key_secret: its secret; prefer ``access_key_secret_env`` or ``access_key_secret_file``.
    :ivar access_key_secret_env: environment variable holding the secret.
    :ivar access_key_secret_file: a file holding the secret.
    :ivar sign_name: the approved signature name (签名).
    :ivar template_code: the approved template (Aliyun ``SMS_123``, Tencent template id).
    :ivar template_params: the template's parameters as JSON (Jinja2, the body template's
        variables): Aliyun an object (default ``{"content": text}``), Tencent an array of text
        (default ``[text]``).
    :ivar app_id: Tencent Cloud's SmsSdkAppId.
    :ivar region: the API region (default ``cn-hangzhou`` / ``ap-guangzhou``).
    """

    url: str | None = attrs.field(default=None, validator=_http_url)
    method: str = attrs.field(default="POST", validator=_method)
    body_template: str = attrs.field(default=DEFAULT_TEMPLATE, validator=_template)
    content_type: str = "application/json"
    sender: str = ""
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    default_region: str | None = attrs.field(default=None, validator=_region)
    max_segments: int = attrs.field(default=10, validator=_positive)
    provider_id_field: str | None = "id"
    timeout: float = attrs.field(default=10.0, validator=_positive)
    refuse_private: bool = False
    preset: str | None = attrs.field(default=None, validator=_preset)
    access_key_id: str | None = None
    access_key_secret: str | None = None
    access_key_secret_env: str | None = None
    access_key_secret_file: str | None = None
    sign_name: str | None = None
    template_code: str | None = None
    template_params: str | None = attrs.field(default=None, validator=attrs.validators.optional(_template))
    app_id: str | None = None
    region: str | None = None

    def key_secret(self) -> str:
        """The preset's secret (from ``access_key_secret_env`` or ``_file`` when set)."""
        value = channel_secret("access_key_secret", f"sms-http ({self.preset}): [channels.sms-http]",
                               self.access_key_secret, self.access_key_secret_env, self.access_key_secret_file)
        if not value:
            raise crmcore.PermanentError(f"sms-http ({self.preset}): [channels.sms-http] needs access_key_secret_env, "
                                         "access_key_secret_file or access_key_secret")
        return value

    def auth(self) -> tuple[str, str] | None:
        if not self.username:
            return None
        return self.username, channel_secret("password", "sms-http: [channels.sms-http]", self.password,
                                      self.password_env, self.password_file) or ""

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {_env(self.token_env, 'token_env')}"} if self.token_env else {}


def _env(variable: str, key: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise crmcore.PermanentError(f"sms-http: [channels.sms-http] {key}: environment variable {variable} is not set")
    return value


class SmsHttpChannel(crmcore.Channel):
    """Sends SMS through a configurable HTTP gateway."""

    name = "sms-http"
    description = "SMS through a provider's HTTP API (templated body, E.164 numbers, GSM-7/UCS-2 segments)"
    options_type = SmsHttpOptions
    address = "phone"

    def __init__(self) -> None:
        self._clients = ClientPerThread()

    def open(self, options: SmsHttpOptions) -> None:
        if options.preset is not None:
            check_preset(options)  # missing keys are misconfigurations: say so before any request
            self._clients.open(options.timeout, refuse_private=options.refuse_private)
            return
        if not options.url:
            raise crmcore.PermanentError("sms-http: no URL: set [channels.sms-http] url")
        options.auth()  # missing secrets are misconfigurations: say so before any request
        options.auth_headers()
        self._clients.open(options.timeout, refuse_private=options.refuse_private)

    def send(self, message: crmcore.Message, options: SmsHttpOptions) -> crmcore.Delivered:
        to = e164(message.recipient, options.default_region)
        text = message.body or ""
        length = sms_length(text)
        if length.segments > options.max_segments:
            raise crmcore.PermanentError(f"sms-http: text needs {length.segments} segments ({length.encoding}), "
                                         f"more than max_segments = {options.max_segments}")
        values = {"to": to, "text": text, "sender": options.sender, "message_id": message.id,
                  "key": message.idempotency_key, "encoding": length.encoding, "segments": length.segments}
        if options.preset is not None:
            client = self._clients.get(options.timeout, refuse_private=options.refuse_private)
            sent = send_preset(client, options, message, to, values)
            return crmcore.Delivered(sent.provider_id, {**sent.details, "to": to, "encoding": length.encoding,
                                                        "units": length.units, "segments": length.segments})
        if not options.url:
            raise crmcore.PermanentError("sms-http: no URL: set [channels.sms-http] url")
        body = render_body(options, **values)
        headers = {**options.headers, **options.auth_headers(), "Content-Type": options.content_type}
        response = request(self._clients.get(options.timeout, refuse_private=options.refuse_private), "sms-http", options.method, options.url,
                           content=body.encode("utf-8"), headers=headers, auth=options.auth())
        return crmcore.Delivered(provider_id(response, options.provider_id_field),
                                 {"to": to, "encoding": length.encoding, "units": length.units,
                                  "segments": length.segments})

    def close(self) -> None:
        self._clients.close()


def e164(recipient: str | None, region: str | None) -> str:
    """The recipient in E.164, or a :class:`crmcore.PermanentError` saying why not."""
    if not recipient:
        raise crmcore.PermanentError("sms-http: no phone number")
    try:
        number = phonenumbers.parse(recipient, region.upper() if region else None)
    except phonenumbers.NumberParseException as exc:
        raise crmcore.PermanentError(f"sms-http: invalid phone number {recipient!r}: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise crmcore.PermanentError(f"sms-http: invalid phone number {recipient!r}: not a valid number "
                                     f"for region {phonenumbers.region_code_for_number(number) or '?'}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def render_params(options: SmsHttpOptions, **values: Any) -> str:
    """A preset's template parameters from ``template_params`` (or the preset's default)."""
    from jinja2 import TemplateError

    source = options.template_params or DEFAULT_PARAMS[str(options.preset)]
    try:
        return _templates().from_string(source).render(**values)
    except TemplateError as exc:
        raise crmcore.PermanentError(f"sms-http: [channels.sms-http] template_params: {exc}") from None


def render_body(options: SmsHttpOptions, **values: Any) -> str:
    """The request body from ``body_template``; an unknown variable is a permanent error."""
    from jinja2 import TemplateError

    try:
        return _templates().from_string(options.body_template).render(**values)
    except TemplateError as exc:
        raise crmcore.PermanentError(f"sms-http: [channels.sms-http] body_template: {exc}") from None
