"""Group-robot channels a Chinese team uses: ``wecom`` (企业微信) and ``dingtalk`` (钉钉).

Both post a message into a group chat through the group's robot webhook, so they suit internal
notices (``crm task remind``, a trigger on a complaint) more than messages to a customer: the
recipient is the group, not an address of the customer (``address = None``).  The text is the
message's subject (if any), a blank line and its body.

**WeCom** (``[channels.wecom]``): ``POST {url}?key={key}`` with
``{"msgtype": "text", "text": {"content": ..., "mentioned_list": [...], "mentioned_mobile_list": [...]}}``
(or ``"markdown"``).  The robot's key is the secret: ``key_env`` / ``key_file`` / ``key``.

**DingTalk** (``[channels.dingtalk]``): ``POST {url}?access_token={token}&timestamp={ms}&sign={sign}`` with
``{"msgtype": "text", "text": {"content": ...}, "at": {"atMobiles": [...], "isAtAll": false}}``
(or ``"markdown"`` with a ``title``).  With a signing secret (the robot's "加签" setting),
``sign`` is the URL-encoded base64 of HMAC-SHA256 keyed with the secret over
``"{timestamp}\\n{secret}"``, the timestamp in milliseconds (:func:`dingtalk_sign`).

A message's ``payload`` may name people to mention: ``mentions`` (WeCom user ids) and
``mobiles`` (phone numbers, both robots), beside the configured ones.

Verdicts: the HTTP status as for every HTTP channel, then the JSON ``errcode``: 0 delivered;
a rate limit (WeCom 45009, DingTalk 130101) or a busy system (-1) retried; anything else
permanent (a wrong key, a signature refused, a keyword the robot requires missing).
Both robots allow about 20 messages a minute per group: set ``[notify.policy.NAME] rate``.
Error messages never show the key, token or signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from typing import Any

import attrs

import crmcore

from .channel_secrets import channel_secret
from .httpcalls import ClientPerThread, request

WECOM_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
DINGTALK_URL = "https://oapi.dingtalk.com/robot/send"
MSGTYPES = ("text", "markdown")
#: errcode values that mean "later": rate limits and a busy system.
RETRY_CODES = {"wecom": frozenset({-1, 45009, 45033}), "dingtalk": frozenset({-1, 130101, 130102})}
#: The longest content each robot takes, in UTF-8 bytes (WeCom text 2048, markdown 4096; DingTalk 20000).
MAX_BYTES = {("wecom", "text"): 2048, ("wecom", "markdown"): 4096, ("dingtalk", "text"): 20000,
             ("dingtalk", "markdown"): 20000}


def _http_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL, got {value!r}")


def _msgtype(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in MSGTYPES:
        raise ValueError(f"{attribute.name} must be one of {', '.join(MSGTYPES)}, got {value!r}")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class WeComOptions:
    """Options of the ``wecom`` channel (``[channels.wecom]``).

    :ivar key: the group robot's webhook key; prefer ``key_env`` or ``key_file``.
    :ivar key_env: name of an environment variable holding the key.
    :ivar key_file: a file holding the key (a mounted secret).
    :ivar url: the webhook endpoint (the key is added as ``?key=``).
    :ivar msgtype: ``text`` or ``markdown``.
    :ivar mentioned_list: WeCom user ids to mention in every message (``"@all"`` for everyone).
    :ivar mentioned_mobile_list: phone numbers to mention in every message.
    :ivar timeout: seconds for connecting and for the response.
    :ivar ca_file: trust this CA bundle (PEM) for https.
    :ivar refuse_private: refuse a ``url`` that resolves to a private, loopback or link-local address.
    """

    key: str | None = None
    key_env: str | None = None
    key_file: str | None = None
    url: str = attrs.field(default=WECOM_URL, validator=_http_url)
    msgtype: str = attrs.field(default="text", validator=_msgtype)
    mentioned_list: tuple[str, ...] = ()
    mentioned_mobile_list: tuple[str, ...] = ()
    timeout: float = attrs.field(default=10.0, validator=_positive)
    ca_file: str | None = None
    refuse_private: bool = False

    def secret(self) -> str:
        """The robot's key (from ``key_env`` or ``key_file`` when set)."""
        value = channel_secret("key", "wecom: [channels.wecom]", self.key, self.key_env, self.key_file)
        if not value:
            raise crmcore.PermanentError("wecom: no robot key: set [channels.wecom] key_env, key_file or key")
        return value


@attrs.frozen
class DingTalkOptions:
    """Options of the ``dingtalk`` channel (``[channels.dingtalk]``).

    :ivar access_token: the group robot's access token; prefer ``access_token_env`` or ``access_token_file``.
    :ivar access_token_env: name of an environment variable holding the token.
    :ivar access_token_file: a file holding the token.
    :ivar secret: the robot's signing secret (加签, ``SEC...``); prefer ``secret_env`` or ``secret_file``.
        Without one no ``sign`` is sent (a robot secured by keywords or IP ranges).
    :ivar secret_env: name of an environment variable holding the signing secret.
    :ivar secret_file: a file holding the signing secret.
    :ivar url: the webhook endpoint.
    :ivar msgtype: ``text`` or ``markdown`` (the message's subject is the markdown title).
    :ivar at_mobiles: phone numbers to mention in every message.
    :ivar at_all: mention everyone in the group.
    :ivar timeout: seconds for connecting and for the response.
    :ivar ca_file: trust this CA bundle (PEM) for https.
    :ivar refuse_private: refuse a ``url`` that resolves to a private, loopback or link-local address.
    """

    access_token: str | None = None
    access_token_env: str | None = None
    access_token_file: str | None = None
    secret: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    url: str = attrs.field(default=DINGTALK_URL, validator=_http_url)
    msgtype: str = attrs.field(default="text", validator=_msgtype)
    at_mobiles: tuple[str, ...] = ()
    at_all: bool = False
    timeout: float = attrs.field(default=10.0, validator=_positive)
    ca_file: str | None = None
    refuse_private: bool = False

    def token(self) -> str:
        """The robot's access token (from ``access_token_env`` or ``access_token_file`` when set)."""
        value = channel_secret("access_token", "dingtalk: [channels.dingtalk]", self.access_token,
                               self.access_token_env, self.access_token_file)
        if not value:
            raise crmcore.PermanentError("dingtalk: no access token: set [channels.dingtalk] access_token_env, "
                                         "access_token_file or access_token")
        return value

    def signing_secret(self) -> str | None:
        """The signing secret, or None when the robot is not set to sign."""
        if self.secret is None and self.secret_env is None and self.secret_file is None:
            return None
        return channel_secret("secret", "dingtalk: [channels.dingtalk]", self.secret, self.secret_env,
                              self.secret_file)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's ``sign`` parameter (before URL encoding): base64 of HMAC-SHA256 keyed with
    ``secret`` over ``"{timestamp_ms}\\n{secret}"``."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _content(message: crmcore.Message) -> str:
    parts = [p for p in (message.subject, message.body) if p]
    return "\n\n".join(parts)


def _listed(payload: dict[str, Any], key: str) -> list[str]:
    value = payload.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise crmcore.PermanentError(f"payload {key} must be a list of text, got {value!r}")
    return value


def _checked(name: str, msgtype: str, text: str) -> str:
    if not text:
        raise crmcore.PermanentError(f"{name}: the message has no subject and no body")
    limit = MAX_BYTES[(name, msgtype)]
    if len(text.encode("utf-8")) > limit:
        raise crmcore.PermanentError(f"{name}: the {msgtype} message is {len(text.encode('utf-8'))} bytes; "
                                     f"the robot takes at most {limit}")
    return text


def _post(clients: ClientPerThread, name: str, url: str, body: dict[str, Any], hidden: list[str],
          timeout: float, ca_file: str | None, refuse_private: bool) -> None:
    """POST ``body`` as JSON; the verdict from the status and the JSON ``errcode``.  ``hidden``
    values (key, token, signature) never appear in an error message."""
    content = json.dumps(body, ensure_ascii=False).encode("utf-8")
    client = clients.get(timeout, ca_file or True, refuse_private)
    try:
        response = request(client, name, "POST", url, content=content,
                           headers={"Content-Type": "application/json; charset=utf-8"})
    except (crmcore.TransientError, crmcore.PermanentError) as exc:
        raise type(exc)(_hide(str(exc), hidden)) from None
    try:
        answer = response.json()
    except ValueError:
        raise crmcore.PermanentError(f"{name}: the robot answered {response.status_code} with no JSON: "
                                     f"{_hide(response.text[:200], hidden)!r}") from None
    code = answer.get("errcode", 0) if isinstance(answer, dict) else None
    if code == 0:
        return
    detail = f"{name}: the robot refused the message: errcode {code}: {_hide(str(answer.get('errmsg', '')), hidden)}" \
        if isinstance(answer, dict) else f"{name}: unexpected answer {answer!r}"
    if code in RETRY_CODES[name]:
        raise crmcore.TransientError(detail)
    raise crmcore.PermanentError(detail)


def _hide(text: str, hidden: list[str]) -> str:
    for value in hidden:
        if value:
            text = text.replace(value, "***").replace(urllib.parse.quote(value, safe=""), "***")
    return text


class WeComChannel(crmcore.Channel):
    """Posts into a WeCom (企业微信) group through its robot webhook."""

    name = "wecom"
    description = "WeCom (企业微信) group robot webhook: text or markdown into a group chat, with mentions"
    options_type = WeComOptions
    address = None

    def __init__(self) -> None:
        self._clients = ClientPerThread()

    def open(self, options: WeComOptions) -> None:
        options.secret()  # a missing key is a misconfiguration: say so before any request
        self._clients.open(options.timeout, options.ca_file or True, options.refuse_private)

    def send(self, message: crmcore.Message, options: WeComOptions) -> None:
        key = options.secret()
        payload = message.payload or {}
        text = _checked(self.name, options.msgtype, _content(message))
        if options.msgtype == "markdown":
            body: dict[str, Any] = {"msgtype": "markdown", "markdown": {"content": text}}
        else:
            body = {"msgtype": "text", "text": {
                "content": text,
                "mentioned_list": list(options.mentioned_list) + _listed(payload, "mentions"),
                "mentioned_mobile_list": list(options.mentioned_mobile_list) + _listed(payload, "mobiles")}}
        url = f"{options.url}?{urllib.parse.urlencode({'key': key})}"
        _post(self._clients, self.name, url, body, [key], options.timeout, options.ca_file, options.refuse_private)

    def close(self) -> None:
        self._clients.close()


class DingTalkChannel(crmcore.Channel):
    """Posts into a DingTalk (钉钉) group through its robot webhook, signed when a secret is set."""

    name = "dingtalk"
    description = "DingTalk (钉钉) group robot webhook: text or markdown, signed timestamp (加签), @ mentions"
    options_type = DingTalkOptions
    address = None

    def __init__(self) -> None:
        self._clients = ClientPerThread()

    def open(self, options: DingTalkOptions) -> None:
        options.token()  # missing secrets are misconfigurations: say so before any request
        options.signing_secret()
        self._clients.open(options.timeout, options.ca_file or True, options.refuse_private)

    def send(self, message: crmcore.Message, options: DingTalkOptions) -> None:
        token, secret = options.token(), options.signing_secret()
        payload = message.payload or {}
        text = _checked(self.name, options.msgtype, _content(message))
        mobiles = list(options.at_mobiles) + _listed(payload, "mobiles")
        at = {"atMobiles": mobiles, "isAtAll": options.at_all}
        if options.msgtype == "markdown":
            title = (message.subject or text.splitlines()[0])[:64]
            body: dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": at}
        else:
            body = {"msgtype": "text", "text": {"content": text}, "at": at}
        query = {"access_token": token}
        hidden = [token]
        if secret:
            timestamp = int(time.time() * 1000)  # real time, not --as-of: DingTalk allows an hour's skew
            sign = dingtalk_sign(secret, timestamp)
            query |= {"timestamp": str(timestamp), "sign": sign}
            hidden += [secret, sign]
        url = f"{options.url}?{urllib.parse.urlencode(query)}"
        _post(self._clients, self.name, url, body, hidden, options.timeout, options.ca_file, options.refuse_private)

    def close(self) -> None:
        self._clients.close()
