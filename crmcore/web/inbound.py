"""Public inbound endpoints: lead-capture forms and HMAC-signed webhooks (``[api]`` in crm.toml).

- ``POST /forms/{name}``: no token.  A form post (urlencoded, multipart or JSON)
  becomes a customer (found by email or phone, else a new lead), an inbound
  interaction and the consent its ticked boxes grant (``crm.leads.capture``).
  ``201 {"status": "received"}`` or, for a browser post to a form with
  ``redirect``, ``303`` there.  The answer is the same whether the person was
  known or not, so the form cannot be used to probe who is a customer.  Limited
  per client address (``rate_limit``; ``429`` with ``Retry-After``) with the
  ``limits`` library, in memory or in Redis (``[api] rate_limit_storage``).
- ``POST /webhooks/{name}``: no token; the body is signed instead::

      X-CRM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

  A missing, malformed or wrong signature, or a timestamp further than
  ``tolerance`` seconds from now (a replay), is ``401`` and nothing is read.
  A repeated ``event_id`` answers ``200`` with the first delivery's result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import string
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import limits
from fastapi import APIRouter, Path, Request
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from ..application.idempotency import MAX_KEY, once, request_hash
from ..application.uow import SYSTEM_ACTOR
from ..config.api import Capture, FormSettings, WebhookSettings
from ..domain.errors import ConfigError, ValidationError
from .auth import crm_of
from .encoding import JSON
from .problems import Problem, responses

if TYPE_CHECKING:
    from ..app import CRM

log = logging.getLogger("crmcore.web.inbound")

#: The largest form post or webhook body read (bytes): a lead is a few fields, not a file.
MAX_BODY = 64 * 1024
#: A ticked checkbox, as browsers and people send it (an unticked one is absent or one of OFF).
ON = frozenset({"on", "yes", "true", "1", "y", "checked"})
OFF = frozenset({"", "off", "no", "false", "0", "n"})
SIGNATURE = "X-CRM-Signature"
NamePath = Path(max_length=100, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def inbound_router(crm: "CRM") -> APIRouter:
    """The public form and webhook routes of ``crm``'s ``[api]`` table (checked here, at start-up:
    consent channels exist, webhook secrets are set, the rate-limit storage answers)."""
    settings = crm.config.api
    for capture in (*settings.forms.values(), *settings.webhooks.values()):
        for _, channel, _ in capture.consent:
            if channel != "*" and channel not in crm.notify.registry:
                raise ConfigError(f"[api] {capture.source}: consent names channel {channel!r}, which no plugin "
                                  f"registers")
    for hook in settings.webhooks.values():
        hook.secret()  # ConfigError now rather than a 500 at the first delivery
    limiter = _limiter(settings.rate_limit_storage) if any(f.rate_limit for f in settings.forms.values()) else None
    router = APIRouter(tags=["inbound"])

    @router.post("/forms/{name}", status_code=201, summary="Submit a lead-capture form (public)",
                 operation_id="submit_form", responses=responses(404, 413, 415, 422, 429))
    async def submit_form(request: Request, name: str = NamePath) -> Response:
        form = settings.forms.get(name)
        if form is None:
            raise Problem(404, f"no form {name!r}", "not-found")
        if form.rate_limit and limiter is not None:
            _check_rate(limiter, form, request)
        body = await _read(request)
        browser = not _is_json(request)
        values = _json_object(body) if not browser else await _form_values(request)
        if form.honeypot and values.get(form.honeypot) not in (None, ""):
            log.info("form %s: honeypot %s filled by %s: dropped", name, form.honeypot, _client(request))
            return _received(form, browser)
        customer, interaction, consent = _mapped(form, values, lambda field: values.get(field))
        await run_in_threadpool(_capture, crm, form, customer, interaction, consent, "web")
        return _received(form, browser)

    @router.post("/webhooks/{name}", status_code=201, summary="Deliver a signed inbound webhook (public)",
                 operation_id="deliver_webhook", responses=responses(401, 404, 413, 422))
    async def deliver_webhook(request: Request, name: str = NamePath) -> Response:
        hook = settings.webhooks.get(name)
        if hook is None:
            raise Problem(404, f"no webhook {name!r}", "not-found")
        body = await _read(request)
        _verify(hook, request.headers.get(SIGNATURE), body, time.time())
        payload = _json_object(body)
        customer, interaction, consent = _mapped(hook, payload, lambda path: _at(payload, path))
        event = _event_id(hook, payload)
        status, data, replayed = await run_in_threadpool(_deliver, crm, hook, event, customer, interaction, consent)
        return JSON(data, status_code=status, headers={"Idempotency-Replayed": "true"} if replayed else None)

    return router


# -- rate limits ---------------------------------------------------------------------------------

def _limiter(uri: str) -> MovingWindowRateLimiter:
    try:
        storage = storage_from_string(uri)
    except Exception as exc:  # limits raises ConfigurationError for a storage whose driver is missing
        raise ConfigError(f"[api] rate_limit_storage {uri!r}: {exc} (for Redis: pip install 'crmcore[redis]')") \
            from None
    return MovingWindowRateLimiter(storage)


def _client(request: Request) -> str:
    """The client address: the peer, or what a proxy named by ``crm serve --forwarded-allow-ips`` says."""
    return request.client.host if request.client else "unknown"


def _check_rate(limiter: MovingWindowRateLimiter, form: FormSettings, request: Request) -> None:
    """429 with Retry-After once the client address has used up the form's limit."""
    assert form.rate_limit is not None
    rate = limits.parse(form.rate_limit)
    who = ("form", form.name, _client(request))
    try:
        allowed = limiter.hit(rate, *who)
        retry = 0 if allowed else math.ceil(limiter.get_window_stats(rate, *who).reset_time - time.time())
    except Exception:  # the storage (Redis) is down: refuse rather than let a flood through
        log.exception("form %s: rate-limit storage unavailable", form.name)
        raise Problem(503, "the form cannot take posts right now; try again later", "unavailable",
                      headers={"Retry-After": "30"}) from None
    if not allowed:
        raise Problem(429, f"too many posts to this form from your address (limit {form.rate_limit}); "
                      f"try again in {max(retry, 1)} s", "rate-limited", headers={"Retry-After": str(max(retry, 1))})


# -- reading the request -------------------------------------------------------------------------

async def _read(request: Request) -> bytes:
    """The raw body, at most :data:`MAX_BODY` bytes (413 beyond), kept for the form parser."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise Problem(413, f"the body is larger than {MAX_BODY} bytes", "too-large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Problem(413, f"the body is larger than {MAX_BODY} bytes", "too-large")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's form parser reads the cached body instead of the spent stream
    return body


def _is_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _form_values(request: Request) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Problem(415, "send application/x-www-form-urlencoded, multipart/form-data or application/json",
                      "unsupported-media-type")
    try:
        form = await request.form(max_files=0, max_fields=200)
    except Exception:  # a malformed multipart body, too many parts, a file
        raise Problem(422, "the form data cannot be read (files are not accepted)", "validation") from None
    values: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            raise Problem(422, f"{key}: files are not accepted", "validation",
                          [{"field": key, "pointer": f"/{key}", "detail": "files are not accepted"}])
        values.setdefault(key, value)  # the first of repeated fields, as a browser's first input
    return values


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise Problem(422, "the body is not JSON", "validation") from None
    if not isinstance(data, dict):
        raise Problem(422, "the body must be a JSON object", "validation")
    return data


def _at(payload: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``customer.email``) of a JSON payload; None when absent."""
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


# -- mapping -------------------------------------------------------------------------------------

def _issue(field: str, detail: str) -> dict[str, str]:
    return {"field": field, "pointer": "/" + field.replace(".", "/"), "detail": detail}


def _mapped(capture: Capture, values: Mapping[str, Any], get: Any) -> tuple[
        dict[str, Any], dict[str, Any], list[tuple[str, str]]]:
    """The customer fields, interaction fields and consent grants of an incoming post; a 422
    naming every incoming field that is missing, of the wrong shape or not a yes/no."""
    issues: list[dict[str, str]] = []
    customer: dict[str, Any] = {}
    interaction: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for field, target in capture.fields.items():
        value = get(field)
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):  # a JSON number: a phone or a postcode sent unquoted
            value = str(value)
        if value is not None and not isinstance(value, str):
            issues.append(_issue(field, "must be text, not a list or an object"))
            continue
        value = value.strip() if isinstance(value, str) else None
        if not value:
            continue
        texts[field] = value
        if target.startswith("interaction."):
            interaction[target.removeprefix("interaction.")] = value
        elif target.startswith("attributes."):
            customer.setdefault("attributes", {})[target.removeprefix("attributes.")] = value
        else:
            customer[target] = value
    for field in capture.required:
        if field not in texts and not any(i["field"] == field for i in issues):
            issues.append(_issue(field, "is required"))
    consent = []
    for purpose, channel, field in capture.consent:
        ticked = get(field)
        text = str(ticked).strip().lower() if isinstance(ticked, (str, bool, int)) else None
        if ticked is None or text in OFF:
            continue
        if text not in ON:
            issues.append(_issue(field, "must be ticked (on, yes, true, 1) or not (absent, off, no, false, 0)"))
        else:
            consent.append((purpose, channel))
    if not issues and "email" not in customer and "phone" not in customer:
        wanted = [capture.incoming_of(t) for t in ("email", "phone") if t in capture.fields.values()]
        issues.extend(_issue(f, "an email address or a phone number is needed") for f in wanted)
    if issues:
        raise Problem(422, "invalid input: " + "; ".join(f"{i['field']}: {i['detail']}" for i in issues),
                      "validation", issues)
    # The template, when configured, says how the subject reads (it may quote the mapped field).
    if capture.subject is not None or not interaction.get("subject"):
        interaction["subject"] = _subject(capture, texts)
    return customer, interaction, consent


def _subject(capture: Capture, texts: Mapping[str, str]) -> str:
    """The interaction's subject from the configured template (plain ``{field}`` placeholders only,
    checked at start-up); the values are the strangers' text, inserted, never interpreted."""
    if capture.subject is None:
        return capture.source
    values = {**{f: "" for f in capture.fields}, **texts, "form": capture.name, "source": capture.source}
    parts = []
    for literal, name, _, _ in string.Formatter().parse(capture.subject):
        parts.append(literal)
        if name is not None:
            parts.append(values.get(name, ""))
    return "".join(parts)[:500]


def _renamed(capture: Capture, exc: ValidationError) -> Problem:
    """The core's issues named by the incoming fields (``e_mail``), not the CRM's (``email``)."""
    issues = []
    for field, message in exc.issues:
        target = f"interaction.{field}" if exc.entity == "interaction" else field
        issues.append(_issue(capture.incoming_of(target), message))
    return Problem(422, "invalid input: " + "; ".join(f"{i['field']}: {i['detail']}" for i in issues),
                   "validation", issues)


def _capture(crm: "CRM", capture: Capture, customer: dict[str, Any], interaction: dict[str, Any],
             consent: list[tuple[str, str]], channel: str) -> dict[str, Any]:
    try:
        return crm.leads.capture(capture.source, customer, interaction, consent, kind=capture.kind,
                                 channel=channel, owner=capture.owner, act_as=capture.act_as).as_json()
    except ValidationError as exc:
        raise _renamed(capture, exc) from None


def _received(form: FormSettings, browser: bool) -> Response:
    if browser and form.redirect:
        return RedirectResponse(form.redirect, status_code=303)
    return JSON({"status": "received", "form": form.name}, status_code=201)


# -- webhooks ------------------------------------------------------------------------------------

def _verify(hook: WebhookSettings, header: str | None, body: bytes, now: float) -> None:
    """Check ``X-CRM-Signature`` over the raw body: 401 saying what is wrong."""
    if not header:
        raise _unsigned(f"send {SIGNATURE}: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">",
                        "signature-missing")
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit() and len(value) <= 12:
            timestamp = value
        elif key == "v1":
            signatures.append(value.strip().lower())
    if timestamp is None or not signatures:
        raise _unsigned(f"{SIGNATURE} must be t=<unix seconds>,v1=<hex digest>", "signature-malformed")
    expected = hmac.new(hook.secret(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    # Every v1 is compared (a sender rotating secrets sends two); compare_digest: constant time.
    if not any(hmac.compare_digest(expected.encode(), s.encode("ascii", "replace")) for s in signatures):
        raise _unsigned("the signature does not match the body (wrong secret, or the body was changed)",
                        "signature-invalid")
    if abs(now - int(timestamp)) > hook.tolerance:
        raise _unsigned(f"the signature's timestamp is more than {hook.tolerance} s from now "
                        "(a replayed or delayed delivery; check the sender's clock)", "signature-expired")


def _unsigned(detail: str, kind: str) -> Problem:
    return Problem(401, detail, kind, headers={"WWW-Authenticate": f'CRM-Signature header="{SIGNATURE}"'})


def _event_id(hook: WebhookSettings, payload: Mapping[str, Any]) -> str | None:
    if hook.event_id is None:
        return None
    value = _at(payload, hook.event_id)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise Problem(422, f"{hook.event_id}: the event id is missing or not text", "validation",
                      [_issue(hook.event_id, "the event id is missing or not text")])
    return str(value)


def _deliver(crm: "CRM", hook: WebhookSettings, event: str | None, customer: dict[str, Any],
             interaction: dict[str, Any], consent: list[tuple[str, str]]) -> tuple[int, Any, bool]:
    """Capture a delivery, once per event id (the key commits with the capture)."""
    def work() -> tuple[int, Any]:
        return 201, _capture(crm, hook, customer, interaction, consent, "webhook")

    if event is None:
        status, data = work()
        return status, data, False
    key = f"webhook:{hook.name}:{event}"
    if len(key) > MAX_KEY:
        key = f"webhook:{hook.name}:sha256:{hashlib.sha256(event.encode()).hexdigest()}"
    # The event id alone says "the same event": a redelivery whose body differs (a retry counter) is
    # still a replay.  The key belongs to the acting user, as every idempotency key does.
    with crm.acting_as(hook.act_as or SYSTEM_ACTOR):
        # The capture's door locks first: on MariaDB they must come before the key's read.
        stored, replayed = once(crm, key, f"POST /webhooks/{hook.name}", request_hash({"event": event}), work,
                                prepare=lambda uow: crm.leads.hold(uow, customer))
    return (200 if replayed else stored.status), stored.body, replayed

