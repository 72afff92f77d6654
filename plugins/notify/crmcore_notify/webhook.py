"""The ``webhook`` channel: POST each message as JSON to a URL, signed.

The body (UTF-8 JSON)::

    {"id": 42, "idempotency_key": "order:7", "channel": "webhook", "purpose": "transactional",
     "customer_id": 3, "recipient": null, "subject": "...", "body": "...", "payload": {...},
     "attempt": 1}

Headers:

* ``X-CRM-Timestamp``: Unix time (seconds) when the request was signed;
* ``X-CRM-Signature``: ``sha256=`` + hex HMAC-SHA256, keyed with the
  configured secret, over ``"{timestamp}.{raw body}"``;
* ``X-CRM-Idempotency-Key``: the message's idempotency key.

A receiver verifies (see :func:`verify_signature`, usable as is):
recompute the HMAC over the timestamp header, a dot and the *raw* body bytes;
compare in constant time; reject a timestamp more than 5 minutes from its own
clock (a captured request cannot be replayed later); and remember the
idempotency keys it has processed.  Delivery is at least once: a message
whose outcome was unknown (dispatcher died during the request) is sent again
(``resend_in_doubt``), with the same idempotency key.

Verdicts: 2xx delivered, 408/429/5xx/timeouts retried, other 4xx permanent.
The provider id is ``provider_id_field`` of a JSON response (default ``id``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import attrs

import crmcore

from .channel_secrets import channel_secret
from .httpcalls import ClientPerThread, provider_id, request

SIGNATURE_HEADER = "X-CRM-Signature"
TIMESTAMP_HEADER = "X-CRM-Timestamp"
KEY_HEADER = "X-CRM-Idempotency-Key"
REPLAY_TOLERANCE_S = 300


def _http_url(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL, got {value!r}")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class WebhookOptions:
    """Options of the ``webhook`` channel (``[channels.webhook]``).

    :ivar url: where to POST (required).
    :ivar secret: the HMAC key; prefer ``secret_env``.
    :ivar secret_env: name of an environment variable holding the key.
    :ivar secret_file: a file holding the key (a mounted secret).
    :ivar timeout: seconds for connecting and for the response.
    :ivar headers: extra request headers (e.g. an API key).
    :ivar provider_id_field: dotted path of the message id in a JSON response.
    :ivar ca_file: trust this CA bundle (PEM) for https.
    :ivar payload_url: a message's ``payload["url"]``, when set, is where it is
        POSTed instead of ``url`` (e.g. each customer's own endpoint).
    :ivar refuse_private: refuse targets that resolve to private, loopback or
        link-local addresses.  Default (unset): refused for a URL from a
        message's payload (data), allowed for ``url`` (the operator's choice).
    """

    url: str | None = attrs.field(default=None, validator=_http_url)
    secret: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    timeout: float = attrs.field(default=10.0, validator=_positive)
    headers: dict[str, str] = attrs.field(factory=dict)
    provider_id_field: str | None = "id"
    ca_file: str | None = None
    payload_url: bool = False
    refuse_private: bool | None = None

    def target(self, message: crmcore.Message) -> tuple[str, bool]:
        """Where to POST ``message`` and whether private targets are refused for it."""
        given = (message.payload or {}).get("url") if self.payload_url else None
        if given is None:
            if not self.url:
                raise crmcore.PermanentError("webhook: no URL: set [channels.webhook] url")
            return self.url, bool(self.refuse_private)
        if not isinstance(given, str) or not given.startswith(("http://", "https://")):
            raise crmcore.PermanentError(f"webhook: payload url must be an http:// or https:// URL, got {given!r}")
        return given, self.refuse_private is not False

    def key(self) -> bytes:
        """The signing key (from ``secret_env`` or ``secret_file`` when set)."""
        value = channel_secret("secret", "webhook: [channels.webhook]", self.secret, self.secret_env, self.secret_file)
        if not value:
            raise crmcore.PermanentError("webhook: no signing secret: set [channels.webhook] secret_env, "
                                         "secret_file or secret")
        return value.encode("utf-8")


class WebhookChannel(crmcore.Channel):
    """POSTs signed JSON to a configured URL."""

    name = "webhook"
    description = "POST signed JSON to a URL (HMAC-SHA256 over timestamp.body; 2xx delivered)"
    options_type = WebhookOptions
    address = None
    resend_in_doubt = True  # receivers de-duplicate on X-CRM-Idempotency-Key (documented contract)

    def __init__(self) -> None:
        self._clients = ClientPerThread()

    def open(self, options: WebhookOptions) -> None:
        if not options.url and not options.payload_url:
            raise crmcore.PermanentError("webhook: no URL: set [channels.webhook] url")
        options.key()  # a missing secret is a misconfiguration: say so before any request
        self._clients.open(options.timeout, options.ca_file or True, bool(options.refuse_private))

    def send(self, message: crmcore.Message, options: WebhookOptions) -> str | None:
        url, refuse_private = options.target(message)
        body = json_body(message)
        timestamp = str(int(time.time()))  # real time, not --as-of: receivers check it against their clock
        headers = {**options.headers, "Content-Type": "application/json; charset=utf-8",
                   TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(options.key(), timestamp, body),
                   KEY_HEADER: message.idempotency_key}
        client = self._clients.get(options.timeout, options.ca_file or True, refuse_private)
        response = request(client, "webhook", "POST", url, content=body, headers=headers)
        return provider_id(response, options.provider_id_field)

    def close(self) -> None:
        self._clients.close()


def json_body(message: crmcore.Message) -> bytes:
    """The request body for a message (UTF-8 JSON, keys sorted)."""
    record = {"id": message.id, "idempotency_key": message.idempotency_key, "channel": message.channel,
              "purpose": message.purpose, "customer_id": message.customer_id, "recipient": message.recipient,
              "subject": message.subject, "body": message.body, "payload": message.payload,
              "attempt": message.attempts}
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 over ``timestamp.body``."""
    return "sha256=" + hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(key: bytes, timestamp: str, body: bytes, signature: str, *,
                     tolerance_s: int = REPLAY_TOLERANCE_S, now: float | None = None) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent.

    :param key: the shared secret.
    :param timestamp: the ``X-CRM-Timestamp`` header.
    :param body: the raw request body (bytes as received, not re-serialised).
    :param signature: the ``X-CRM-Signature`` header.
    :param tolerance_s: how far the timestamp may be from ``now`` (replays).
    """
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, timestamp, body), signature)
