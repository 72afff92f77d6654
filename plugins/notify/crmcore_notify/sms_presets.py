"""``sms-http`` presets for the large Chinese SMS providers: ``aliyun`` (阿里云短信) and ``tencent``
(腾讯云短信).

Both send only pre-approved templates (a signature name, 签名, and a template code, 模板) with
parameters, and both sign each request, so a preset replaces the body template and static
authentication of a plain ``sms-http`` channel with the provider's own request:

* ``aliyun``: ``SendSms`` of Dysmsapi (version 2017-05-25), an RPC request form-encoded in a POST,
  signed with signature version 1.0: HMAC-SHA1 keyed with ``AccessKeySecret + "&"`` over
  ``"POST&%2F&" + percent_encode(canonicalized sorted parameters)``, base64 (:func:`aliyun_signature`).
* ``tencent``: ``SendSms`` of the SMS API 3.0 (version 2021-01-11), a JSON POST signed with
  TC3-HMAC-SHA256 (:func:`tencent_authorization`).

The template's parameters come from ``template_params`` (Jinja2, sandboxed, like ``body_template``;
it gets the same variables): for Aliyun a JSON object (default ``{"content": text}``), for Tencent a
JSON array of strings (default ``[text]``).  A message may bring its own in
``payload["template_params"]`` and its own ``payload["template_code"]``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import crmcore

if TYPE_CHECKING:
    import httpx

    from .sms_http import SmsHttpOptions

PRESETS = ("aliyun", "tencent")
ENDPOINTS = {"aliyun": "https://dysmsapi.aliyuncs.com/", "tencent": "https://sms.tencentcloudapi.com/"}
REGIONS = {"aliyun": "cn-hangzhou", "tencent": "ap-guangzhou"}
DEFAULT_PARAMS = {"aliyun": '{"content": {{ text|tojson }}}', "tencent": "[{{ text|tojson }}]"}
#: Answers that mean "later": throttling and the provider's own trouble.
ALIYUN_RETRY = frozenset({"isv.BUSINESS_LIMIT_CONTROL", "Throttling", "Throttling.User", "Throttling.Api",
                          "ServiceUnavailable", "InternalError", "SignatureNonceUsed"})
TENCENT_RETRY_PREFIXES = ("RequestLimitExceeded", "InternalError", "LimitExceeded.PhoneNumberThirtySecondLimit",
                          "LimitExceeded.PhoneNumberOneHourLimit", "FailedOperation.InsufficientBalanceInSmsPackage")


def percent_encode(value: str) -> str:
    """Aliyun's percent encoding: RFC 3986 unreserved characters kept, everything else ``%XX``
    (a space is ``%20``, ``*`` is ``%2A``, ``~`` stays)."""
    return urllib.parse.quote(value, safe="-_.~")


def aliyun_signature(secret: str, method: str, params: dict[str, str]) -> str:
    """Signature version 1.0 of an Aliyun RPC request with ``params`` (without ``Signature``)."""
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))
    string_to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def tencent_authorization(secret_id: str, secret_key: str, host: str, content_type: str, body: bytes,
                          timestamp: int, service: str = "sms") -> str:
    """The ``Authorization`` header of a TC3-HMAC-SHA256 signed POST to ``/`` with ``body``."""
    day = datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d")
    canonical = "\n".join(["POST", "/", "", f"content-type:{content_type}\nhost:{host}\n", "content-type;host",
                           hashlib.sha256(body).hexdigest()])
    scope = f"{day}/{service}/tc3_request"
    string_to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope,
                                hashlib.sha256(canonical.encode("utf-8")).hexdigest()])

    def keyed(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()

    signing = keyed(keyed(keyed(f"TC3{secret_key}".encode("utf-8"), day), service), "tc3_request")
    signature = hmac.new(signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}"


def check_options(options: SmsHttpOptions) -> None:
    """What a preset needs, or a :class:`crmcore.PermanentError` naming the missing option."""
    assert options.preset is not None
    label = f"sms-http ({options.preset}): [channels.sms-http]"
    needed = ["access_key_id", "sign_name", "template_code"] + (["app_id"] if options.preset == "tencent" else [])
    missing = [name for name in needed if not getattr(options, name)]
    if missing:
        raise crmcore.PermanentError(f"{label} needs {', '.join(missing)}")
    options.key_secret()


def _params(options: SmsHttpOptions, message: crmcore.Message, values: dict[str, Any]) -> Any:
    from .sms_http import render_params

    given = (message.payload or {}).get("template_params")
    if given is not None:
        return given
    rendered = render_params(options, **values)
    try:
        return json.loads(rendered)
    except ValueError as exc:
        raise crmcore.PermanentError(f"sms-http ({options.preset}): template_params is not JSON: {exc}") from None


def send(client: httpx.Client, options: SmsHttpOptions, message: crmcore.Message, to: str,
         values: dict[str, Any]) -> crmcore.Delivered:
    """Send one SMS through the preset's API; the verdict from its answer."""
    from .httpcalls import request

    assert options.preset is not None
    secret = options.key_secret()
    template = str((message.payload or {}).get("template_code") or options.template_code)
    params = _params(options, message, values)
    url = options.url or ENDPOINTS[options.preset]
    region = options.region or REGIONS[options.preset]
    label = f"sms-http ({options.preset})"
    if options.preset == "aliyun":
        if not isinstance(params, dict):
            raise crmcore.PermanentError(f"{label}: template parameters must be a JSON object, got {params!r}")
        form = {"AccessKeyId": str(options.access_key_id), "Action": "SendSms", "Format": "JSON",
                "PhoneNumbers": aliyun_number(to), "RegionId": region, "SignName": str(options.sign_name),
                "SignatureMethod": "HMAC-SHA1", "SignatureNonce": uuid.uuid4().hex, "SignatureVersion": "1.0",
                "TemplateCode": template, "TemplateParam": json.dumps(params, ensure_ascii=False),
                "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "Version": "2017-05-25",
                "OutId": message.idempotency_key[:64]}
        form["Signature"] = aliyun_signature(secret, "POST", form)
        body = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in form.items()).encode("ascii")
        response = request(client, label, "POST", url, content=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        return _aliyun_verdict(label, response)
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise crmcore.PermanentError(f"{label}: template parameters must be a JSON array of text, got {params!r}")
    payload = {"PhoneNumberSet": [to], "SmsSdkAppId": str(options.app_id), "SignName": str(options.sign_name),
               "TemplateId": template, "TemplateParamSet": params, "SessionContext": message.idempotency_key}
    content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    content_type = "application/json; charset=utf-8"
    host = urllib.parse.urlsplit(url).netloc
    timestamp = int(time.time())  # real time: the provider refuses a skew of more than 5 minutes
    headers = {"Content-Type": content_type, "Host": host, "X-TC-Action": "SendSms", "X-TC-Version": "2021-01-11",
               "X-TC-Region": region, "X-TC-Timestamp": str(timestamp),
               "Authorization": tencent_authorization(str(options.access_key_id), secret, host, content_type,
                                                      content, timestamp)}
    response = request(client, label, "POST", url, content=content, headers=headers)
    return _tencent_verdict(label, response)


def aliyun_number(e164: str) -> str:
    """The number as Aliyun takes it: mainland numbers without +86, others as digits with the country code."""
    return e164[3:] if e164.startswith("+86") else e164.lstrip("+")


def _json(label: str, response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise crmcore.PermanentError(f"{label}: the provider answered {response.status_code} with no JSON") from None


def _aliyun_verdict(label: str, response: httpx.Response) -> crmcore.Delivered:
    answer = _json(label, response)
    code = answer.get("Code") if isinstance(answer, dict) else None
    if code == "OK":
        return crmcore.Delivered(answer.get("BizId"), {"request_id": answer.get("RequestId")})
    detail = f"{label}: {code}: {answer.get('Message') if isinstance(answer, dict) else answer!r}"
    if code in ALIYUN_RETRY:
        raise crmcore.TransientError(detail)
    raise crmcore.PermanentError(detail)


def _tencent_verdict(label: str, response: httpx.Response) -> crmcore.Delivered:
    answer = _json(label, response)
    body = answer.get("Response") if isinstance(answer, dict) else None
    if not isinstance(body, dict):
        raise crmcore.PermanentError(f"{label}: unexpected answer {answer!r}")
    error = body.get("Error")
    statuses = body.get("SendStatusSet") or []
    if error is None and statuses and isinstance(statuses[0], dict):
        error = None if statuses[0].get("Code") == "Ok" else statuses[0]
        if error is None:
            return crmcore.Delivered(statuses[0].get("SerialNo"), {"request_id": body.get("RequestId"),
                                                                   "fee": statuses[0].get("Fee")})
    if not isinstance(error, dict):
        raise crmcore.PermanentError(f"{label}: unexpected answer {answer!r}")
    code = str(error.get("Code"))
    detail = f"{label}: {code}: {error.get('Message')}"
    if code.startswith(TENCENT_RETRY_PREFIXES):
        raise crmcore.TransientError(detail)
    raise crmcore.PermanentError(detail)
