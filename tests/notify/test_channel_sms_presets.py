"""``sms-http`` presets for Aliyun (阿里云短信) and Tencent Cloud (腾讯云短信) against loopback servers
that check each request as the provider does: the parameters, and the signature recomputed here
from the providers' documented algorithms (not with the channel's code).  Then the verdicts of
their answers, a message's own template, and what a preset misses named."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from .loopback import serve_json

KEY_ID, SECRET = "LTAI5tExampleKeyId", "ExampleSecret/With+Symbols="
APP_ID = "1400006666"
NOW = datetime(2026, 12, 6, 1, 0, tzinfo=timezone.utc)


def _quote(value: str) -> str:  # Aliyun: RFC 3986 unreserved kept, the rest %XX (written out from the docs)
    return urllib.parse.quote(value, safe="~").replace("+", "%20").replace("*", "%2A").replace("%7E", "~")


class Providers:
    """``/aliyun`` answers like Dysmsapi SendSms, ``/tencent`` like SMS API 3.0 SendSms."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.queued: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        self.httpd, self.base = serve_json(self._answer)

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
        with self.lock:
            waiting = self.queued.get(path)
            answer = waiting.pop(0) if waiting else None
        if answer is not None:
            return answer
        return (self.aliyun if path == "/aliyun" else self.tencent)(headers, raw)

    def aliyun(self, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
        fields = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("ascii"), keep_blank_values=True).items()}
        signature = fields.pop("Signature", "")
        canonical = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(fields.items()))
        to_sign = "POST&%2F&" + _quote(canonical)
        expected = base64.b64encode(hmac.new(f"{SECRET}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
        if signature != expected:
            return {"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched", "RequestId": "r"}
        stamp = datetime.strptime(fields["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        if abs((stamp - datetime.now(timezone.utc)).total_seconds()) > 900:
            return {"Code": "InvalidTimeStamp.Expired", "Message": "expired", "RequestId": "r"}
        wanted = {"AccessKeyId": KEY_ID, "Action": "SendSms", "Version": "2017-05-25", "SignatureMethod": "HMAC-SHA1",
                  "SignatureVersion": "1.0", "Format": "JSON"}
        if any(fields.get(k) != v for k, v in wanted.items()) or not fields.get("SignatureNonce"):
            return {"Code": "MissingParameter", "Message": str(fields), "RequestId": "r"}
        if not fields["PhoneNumbers"].isdigit():
            return {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "bad number", "RequestId": "r"}
        json.loads(fields["TemplateParam"])
        with self.lock:
            self.accepted.append({"provider": "aliyun", **fields})
        return {"Code": "OK", "Message": "OK", "BizId": f"biz-{len(self.accepted)}", "RequestId": "r"}

    def tencent(self, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
        def error(code: str, message: str) -> dict[str, Any]:
            return {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "r"}}

        stamp = int(headers["X-TC-Timestamp"])
        if abs(stamp - time.time()) > 300:
            return error("AuthFailure.SignatureExpire", "expired")
        day = datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d")
        canonical = (f"POST\n/\n\ncontent-type:{headers['Content-Type']}\nhost:{headers['Host']}\n\n"
                     f"content-type;host\n{hashlib.sha256(raw).hexdigest()}")
        scope = f"{day}/sms/tc3_request"
        to_sign = f"TC3-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = hmac.new(f"TC3{SECRET}".encode(), day.encode(), hashlib.sha256).digest()
        key = hmac.new(key, b"sms", hashlib.sha256).digest()
        key = hmac.new(key, b"tc3_request", hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        expected = f"TC3-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders=content-type;host, Signature={signature}"
        if headers.get("Authorization") != expected:
            return error("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        if (headers.get("X-TC-Action"), headers.get("X-TC-Version")) != ("SendSms", "2021-01-11"):
            return error("InvalidAction", "action")
        body = json.loads(raw)
        if body.get("SmsSdkAppId") != APP_ID or not all(isinstance(p, str) for p in body["TemplateParamSet"]):
            return error("InvalidParameterValue", "app or params")
        with self.lock:
            self.accepted.append({"provider": "tencent", "region": headers["X-TC-Region"], **body})
        return {"Response": {"SendStatusSet": [{"SerialNo": "serial-1", "PhoneNumber": body["PhoneNumberSet"][0],
                                                "Fee": 1, "Code": "Ok", "Message": "send success"}],
                             "RequestId": "r"}}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def crm_db_url(crm_sqlite_url: str) -> str:
    """SQLite only: the HTTP side is what is tested here."""
    return crm_sqlite_url


@pytest.fixture
def providers() -> Iterator[Providers]:
    server = Providers()
    yield server
    server.close()


def open_crm(crm_factory, providers, preset, monkeypatch, **more):
    monkeypatch.setenv("CRM_SMS_SECRET", SECRET)
    options = {"preset": preset, "url": f"{providers.base}/{preset}", "access_key_id": KEY_ID,
               "access_key_secret_env": "CRM_SMS_SECRET", "sign_name": "某某商城", "template_code": "SMS_15305",
               "default_region": "CN", **({"app_id": APP_ID} if preset == "tencent" else {}), **more}
    return crm_factory(plugins=["notify"], config={"channels": {"sms-http": options}, "timezone": "Asia/Shanghai",
                                                   "phone_region": "CN"},
                       clock=lambda: NOW)


def test_aliyun_signed_request(crm_factory, providers, monkeypatch):
    crm = open_crm(crm_factory, providers, "aliyun", monkeypatch)
    customer = crm.customers.add(name="王芳", phone="138 0013 8000")
    mid = crm.notify.enqueue("sms-http", customer_id=customer.id, body="您的订单已发货 (顺丰) *加急* ~", key="ship:7")
    assert crm.notify.dispatch().sent == 1
    [got] = providers.accepted
    assert (got["PhoneNumbers"], got["SignName"], got["TemplateCode"], got["RegionId"], got["OutId"]) == (
        "13800138000", "某某商城", "SMS_15305", "cn-hangzhou", "ship:7")
    assert json.loads(got["TemplateParam"]) == {"content": "您的订单已发货 (顺丰) *加急* ~"}
    [row] = crm.notify.outbox(message_id=mid)
    assert (row["status"], row["provider_id"]) == ("sent", "biz-1")
    # A message with its own template and parameters.
    crm.notify.enqueue("sms-http", customer_id=customer.id, body="-",
                       payload={"template_code": "SMS_999", "template_params": {"code": "4711"}})
    assert crm.notify.dispatch().sent == 1
    assert (providers.accepted[-1]["TemplateCode"], json.loads(providers.accepted[-1]["TemplateParam"])) == (
        "SMS_999", {"code": "4711"})


def test_tencent_signed_request(crm_factory, providers, monkeypatch):
    crm = open_crm(crm_factory, providers, "tencent", monkeypatch,
                   template_params='[{{ text[:20]|tojson }}, {{ segments|string|tojson }}]')
    customer = crm.customers.add(name="王芳", phone="+86 139 1111 2222")
    mid = crm.notify.enqueue("sms-http", customer_id=customer.id, body="张伟，您有 2 项回访今日到期")
    assert crm.notify.dispatch().sent == 1
    [got] = providers.accepted
    assert (got["PhoneNumberSet"], got["SignName"], got["TemplateId"], got["region"]) == (
        ["+8613911112222"], "某某商城", "SMS_15305", "ap-guangzhou")
    assert got["TemplateParamSet"] == ["张伟，您有 2 项回访今日到期", "1"]
    assert crm.notify.outbox(message_id=mid)[0]["provider_id"] == "serial-1"


@pytest.mark.parametrize("preset", ["aliyun", "tencent"])
def test_verdicts_and_wrong_secrets(crm_factory, providers, monkeypatch, preset):
    crm = open_crm(crm_factory, providers, preset, monkeypatch)
    customer = crm.customers.add(name="王芳", phone="13800138000")
    busy = {"aliyun": {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控"},
            "tencent": {"Response": {"Error": {"Code": "RequestLimitExceeded", "Message": "too fast"}}}}[preset]
    providers.queued[f"/{preset}"] = [busy]
    mid = crm.notify.enqueue("sms-http", customer_id=customer.id, body="稍后")
    crm.notify.dispatch()
    assert crm.notify.outbox(message_id=mid)[0]["status"] == "pending"
    crm.notify.dispatch(as_of=NOW + timedelta(hours=1))
    assert crm.notify.outbox(message_id=mid)[0]["status"] == "sent"

    monkeypatch.setenv("CRM_SMS_SECRET", "not-the-secret")
    wrong = crm.notify.enqueue("sms-http", customer_id=customer.id, body="x")
    crm.notify.dispatch()
    [row] = crm.notify.outbox(message_id=wrong)
    assert row["status"] == "dead" and ("SignatureDoesNotMatch" in row["last_error"]
                                        or "AuthFailure.SignatureFailure" in row["last_error"])
    assert "not-the-secret" not in row["last_error"]


def test_a_preset_names_what_it_misses(crm_factory, providers, monkeypatch):
    crm = open_crm(crm_factory, providers, "tencent", monkeypatch, app_id=None, sign_name=None)
    customer = crm.customers.add(name="王芳", phone="13800138000")
    mid = crm.notify.enqueue("sms-http", customer_id=customer.id, body="x")
    crm.notify.dispatch()
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "dead" and "needs sign_name, app_id" in row["last_error"]
    with pytest.raises(Exception, match="preset must be one of aliyun, tencent"):
        open_crm(crm_factory, providers, "twilio", monkeypatch)
