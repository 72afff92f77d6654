"""The ``wecom`` and ``dingtalk`` group-robot channels against real HTTP servers on loopback that
check what the real robots check: the key or access token, the JSON shape of each message type,
and DingTalk's signed timestamp (recomputed here from its documented definition, not with the
channel's code).  Also: errcode verdicts, secrets from the environment and files never shown in
errors, a customer message, and ``crm.tasks.remind`` through each robot."""

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

from crmcore_notify.robots import dingtalk_sign

from .loopback import serve_json

WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
DING_TOKEN = "d1ng-token-0123456789"
DING_SECRET = "SEC0123456789abcdef+/="
NOW = datetime(2026, 12, 6, 1, 0, tzinfo=timezone.utc)


class Robots:
    """A loopback server playing both robots: ``/wecom`` and ``/dingtalk``.  Every request is
    checked as the real service checks it; the answer is the service's JSON (``errcode``)."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.refusals: list[str] = []
        self.queued: dict[str, list[dict[str, Any]]] = {}  # path -> answers to give before checking
        self.lock = threading.Lock()
        self.httpd, self.base = serve_json(self._answer)

    def _answer(self, target: str, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
        path, _, query = target.partition("?")
        with self.lock:
            waiting = self.queued.get(path)
            answer = waiting.pop(0) if waiting else None
        # Both services answer 200 and put the verdict in errcode.
        return answer if answer is not None else self.check(path, query, headers.get("Content-Type", ""), raw)

    def refuse(self, code: int, message: str) -> dict[str, Any]:
        with self.lock:
            self.refusals.append(message)
        return {"errcode": code, "errmsg": message}

    def check(self, path: str, query: str, content_type: str, raw: bytes) -> dict[str, Any]:
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if not content_type.startswith("application/json"):
            return self.refuse(40035, f"content type {content_type}")
        try:
            message = json.loads(raw.decode("utf-8"))
        except ValueError:
            return self.refuse(40035, "body is not JSON")
        if path == "/wecom":
            if params.get("key") != [WECOM_KEY]:
                return self.refuse(93000, "invalid webhook url")
            kind = message.get("msgtype")
            part = message.get(kind) if kind in ("text", "markdown") else None
            if not isinstance(part, dict) or not isinstance(part.get("content"), str) or not part["content"]:
                return self.refuse(40008, "invalid message type or content")
            if len(part["content"].encode()) > (2048 if kind == "text" else 4096):
                return self.refuse(40058, "content exceed max length")
            if kind == "text" and not all(isinstance(part.get(k, []), list)
                                          for k in ("mentioned_list", "mentioned_mobile_list")):
                return self.refuse(40008, "mentions must be lists")
        elif path == "/dingtalk":
            if params.get("access_token") != [DING_TOKEN]:
                return self.refuse(300001, "token is not exist")
            stamp, sign = params.get("timestamp", [""])[0], params.get("sign", [""])[0]
            if not stamp.isdigit() or abs(int(stamp) - time.time() * 1000) > 3600 * 1000:
                return self.refuse(310000, "timestamp invalid")
            # The documented rule: base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\n{secret}")), URL-encoded.
            expected = base64.b64encode(hmac.new(DING_SECRET.encode(), f"{stamp}\n{DING_SECRET}".encode(),
                                                 hashlib.sha256).digest()).decode()
            if "sign=" + urllib.parse.quote_plus(expected) not in query and \
                    "sign=" + urllib.parse.quote(expected, safe="") not in query:
                return self.refuse(310000, "sign not match (raw query)")
            if sign != expected:
                return self.refuse(310000, "sign not match")
            kind = message.get("msgtype")
            part = message.get(kind) if kind in ("text", "markdown") else None
            field = "content" if kind == "text" else "text"
            if not isinstance(part, dict) or not isinstance(part.get(field), str) or not part[field]:
                return self.refuse(40035, "missing content")
            if kind == "markdown" and not part.get("title"):
                return self.refuse(40035, "markdown needs a title")
            at = message.get("at", {})
            if not isinstance(at.get("atMobiles", []), list) or not isinstance(at.get("isAtAll", False), bool):
                return self.refuse(40035, "bad at")
        else:
            return self.refuse(404, "no such robot")
        with self.lock:
            self.accepted.append({"path": path, "query": params, "message": message})
        return {"errcode": 0, "errmsg": "ok"}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def crm_db_url(crm_sqlite_url: str) -> str:
    """SQLite only: what is tested is the HTTP side (the tasks' storage is tested on every
    database in tests/tasks)."""
    return crm_sqlite_url


@pytest.fixture
def robots() -> Iterator[Robots]:
    server = Robots()
    yield server
    server.close()


def open_crm(crm_factory, robots, wecom=None, dingtalk=None, **config):
    channels = {"wecom": {"url": f"{robots.base}/wecom", "key": WECOM_KEY, "timeout": 5, **(wecom or {})},
                "dingtalk": {"url": f"{robots.base}/dingtalk", "access_token": DING_TOKEN, "secret": DING_SECRET,
                             "timeout": 5, **(dingtalk or {})}}
    return crm_factory(plugins=["notify"], config={"channels": channels, "timezone": "Asia/Shanghai", **config},
                       clock=lambda: NOW)


def outbox_row(crm, message_id):
    [row] = crm.notify.outbox(message_id=message_id)
    return row


def test_sign_matches_the_documented_example():
    # Written out from DingTalk's documentation, independently of dingtalk_sign.
    stamp, secret = 1577262236757, "this is secret"
    digest = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
    assert dingtalk_sign(secret, stamp) == base64.b64encode(digest).decode()


def test_wecom_text_markdown_and_mentions(crm_factory, robots, monkeypatch):
    monkeypatch.setenv("WECOM_ROBOT_KEY", WECOM_KEY)
    crm = open_crm(crm_factory, robots, wecom={"key": None, "key_env": "WECOM_ROBOT_KEY",
                                               "mentioned_mobile_list": ["13800138000"]})
    customer = crm.customers.add(name="王芳", phone="+8613911112222")
    first = crm.notify.enqueue("wecom", customer_id=customer.id, subject="新投诉", body="客户王芳：物流太慢",
                               payload={"mentions": ["li.wei"]})
    assert crm.notify.dispatch().sent == 1
    [got] = robots.accepted
    assert got["query"]["key"] == [WECOM_KEY]
    assert got["message"] == {"msgtype": "text", "text": {
        "content": "新投诉\n\n客户王芳：物流太慢", "mentioned_list": ["li.wei"],
        "mentioned_mobile_list": ["13800138000"]}}
    assert outbox_row(crm, first)["status"] == "sent"

    markdown = open_crm(crm_factory, robots, wecom={"msgtype": "markdown"})
    text = '**加粗** <font color="warning">3</font> 项逾期'
    markdown.notify.enqueue("wecom", body=text)
    assert markdown.notify.dispatch().sent == 1
    assert robots.accepted[-1]["message"] == {"msgtype": "markdown", "markdown": {"content": text}}
    too_long = markdown.notify.enqueue("wecom", body="长" * 1400)  # 4200 bytes: more than markdown allows
    markdown.notify.dispatch()
    row = outbox_row(markdown, too_long)
    assert row["status"] == "dead" and "at most 4096" in row["last_error"]
    assert not robots.refusals


def test_dingtalk_signed_text_and_markdown(crm_factory, robots, tmp_path):
    secret_file = tmp_path / "ding.secret"
    secret_file.write_text(DING_SECRET + "\n", encoding="utf-8")
    crm = open_crm(crm_factory, robots, dingtalk={"secret": None, "secret_file": str(secret_file),
                                                  "at_mobiles": ["13800138000"]})
    before = int(time.time() * 1000)
    crm.notify.enqueue("dingtalk", subject="日报", body="今日新增客户 3 位", payload={"mobiles": ["13900139000"]})
    assert crm.notify.dispatch().sent == 1, robots.refusals
    [got] = robots.accepted
    assert before <= int(got["query"]["timestamp"][0]) <= int(time.time() * 1000)
    assert got["message"] == {"msgtype": "text", "text": {"content": "日报\n\n今日新增客户 3 位"},
                              "at": {"atMobiles": ["13800138000", "13900139000"], "isAtAll": False}}
    markdown = open_crm(crm_factory, robots, dingtalk={"msgtype": "markdown", "at_all": True})
    markdown.notify.enqueue("dingtalk", subject="周报", body="### 本周\n- 成交 12 单")
    assert markdown.notify.dispatch().sent == 1, robots.refusals
    assert robots.accepted[-1]["message"] == {
        "msgtype": "markdown", "markdown": {"title": "周报", "text": "周报\n\n### 本周\n- 成交 12 单"},
        "at": {"atMobiles": [], "isAtAll": True}}
    assert not robots.refusals


def test_errcodes_wrong_secrets_and_rate_limits(crm_factory, robots):
    wrong = open_crm(crm_factory, robots, dingtalk={"secret": "SECwrong"}, wecom={"key": "wrong-key-123"})
    ding = wrong.notify.enqueue("dingtalk", body="x")
    wecom = wrong.notify.enqueue("wecom", body="x")
    wrong.notify.dispatch()
    assert sorted(robots.refusals) == ["invalid webhook url", "sign not match (raw query)"]
    ding_row, wecom_row = outbox_row(wrong, ding), outbox_row(wrong, wecom)
    assert ding_row["status"] == "dead" and "errcode 310000" in ding_row["last_error"]
    assert wecom_row["status"] == "dead" and "errcode 93000" in wecom_row["last_error"]
    for row in (ding_row, wecom_row):  # the key, token, secret and signature never show
        assert not any(secret in row["last_error"] for secret in ("wrong-key-123", DING_TOKEN, "SECwrong"))

    crm = open_crm(crm_factory, robots)
    robots.queued = {"/dingtalk": [{"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}],
                     "/wecom": [{"errcode": 45009, "errmsg": "api freq out of limit"}]}
    ding = crm.notify.enqueue("dingtalk", body="稍后")
    wecom = crm.notify.enqueue("wecom", body="稍后")
    crm.notify.dispatch()
    assert [outbox_row(crm, m)["status"] for m in (ding, wecom)] == ["pending", "pending"]
    crm.notify.dispatch(as_of=NOW + timedelta(hours=1))
    assert [outbox_row(crm, m)["status"] for m in (ding, wecom)] == ["sent", "sent"]


def test_missing_secrets_name_the_option(crm_factory, robots):
    crm = open_crm(crm_factory, robots, wecom={"key": None, "key_env": "NO_SUCH_VARIABLE_SET"},
                   dingtalk={"access_token": None})
    ding, wecom = crm.notify.enqueue("dingtalk", body="x"), crm.notify.enqueue("wecom", body="x")
    crm.notify.dispatch()
    assert "access_token" in outbox_row(crm, ding)["last_error"]
    assert "NO_SUCH_VARIABLE_SET" in outbox_row(crm, wecom)["last_error"]
    assert not robots.accepted


@pytest.mark.parametrize("channel", ["wecom", "dingtalk"])
def test_task_reminders_through_the_robots(crm_factory, robots, channel):
    crm = open_crm(crm_factory, robots, tasks={"reminder_channel": channel})
    crm.users.add("li.wei", locale="zh-CN")
    customer = crm.customers.add(name="张伟", owner="li.wei")
    crm.interactions.add(customer_id=customer.id, kind="complaint", occurred_at=NOW - timedelta(days=2),
                         subject="发票开错")  # its task (24-hour SLA) is overdue
    crm.tasks.add(customer_id=customer.id, title="回访：续约", assignee="li.wei", due=NOW + timedelta(hours=3))
    [reminder] = crm.tasks.remind(NOW)
    assert (reminder.due_today, reminder.overdue) == (1, 1)
    assert crm.notify.dispatch().sent == 1, robots.refusals
    crm.tasks.remind(NOW + timedelta(hours=1))
    assert crm.notify.dispatch().sent == 0
    [got] = robots.accepted
    text = got["message"]["text"]["content"]
    assert text.startswith("2026-12-06 待办：今日到期 1 项，已逾期 1 项")
    assert f"Complaint: 发票开错 (客户 #{customer.id};" in text and f"回访：续约 (客户 #{customer.id};" in text
