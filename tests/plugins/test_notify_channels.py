"""The ``console`` and ``file`` channels through the core's outbox and dispatcher."""

from __future__ import annotations

import json
import os

import pytest

import crmcore
from crmcore import ConfigError
from crmcore.testing import ChannelContract
from crmcore_notify import ConsoleChannel, FileChannel, FileOptions, message_line, render_message

SUBJECT = "欢迎加入会员计划"
BODY = "张伟您好：\n感谢您的订购，订单 #1024 已确认。\u2028(line separator kept inside the record)"


@pytest.fixture
def outbox_path(tmp_path):
    return tmp_path / "out" / "outbox.jsonl"  # the parent directory does not exist yet


@pytest.fixture
def crm(crm_factory, outbox_path):
    return crm_factory(plugins=["notify"], config={"channels": {"file": {"path": str(outbox_path)}}})


def read_records(path) -> list[dict]:
    text = path.read_bytes().decode("utf-8")  # must be valid UTF-8
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


# -- file ----------------------------------------------------------------------------------

def test_file_channel_appends_json_lines(crm, outbox_path):
    customer = crm.customers.add(name="张伟", email="zhang.wei@example.com")
    first = crm.notify.enqueue("file", customer_id=customer.id, recipient="zhang.wei@example.com",
                               subject=SUBJECT, body=BODY, payload={"订单": 1024, "items": ["茶", "杯"]},
                               key="welcome-1024")
    second = crm.notify.enqueue("file", recipient="ops@example.com", subject="Daily digest", body="3 new deals")
    result = crm.notify.dispatch()
    assert result.sent == 2

    raw = outbox_path.read_bytes()
    assert SUBJECT.encode("utf-8") in raw  # written as text, not as \\u escapes
    assert raw.count(b"\n") == 2  # the U+2028 in the body did not split the record
    records = read_records(outbox_path)
    assert [r["id"] for r in records] == [first, second]
    rows = {row["id"]: row for row in crm.notify.outbox()}
    for record in records:
        row = rows[record["id"]]
        assert row["status"] == "sent"
        for field in ("idempotency_key", "channel", "recipient", "subject", "body", "payload", "purpose",
                      "customer_id"):
            assert record[field] == row[field], field
    assert records[0]["body"] == BODY
    assert records[0]["payload"] == {"订单": 1024, "items": ["茶", "杯"]}
    assert records[0]["idempotency_key"] == "welcome-1024"
    assert records[0]["customer_id"] == customer.id and records[1]["customer_id"] is None

    assert crm.notify.dispatch().sent == 0  # nothing is written twice
    third = crm.notify.enqueue("file", recipient="x@example.com", body="later")
    crm.notify.dispatch()
    assert [r["id"] for r in read_records(outbox_path)] == [first, second, third]  # appended


def test_enqueue_with_the_same_key_writes_once(crm, outbox_path):
    ids = {crm.notify.enqueue("file", recipient="a@example.com", body="once", key="k-1") for _ in range(3)}
    assert len(ids) == 1
    crm.notify.dispatch()
    assert len(read_records(outbox_path)) == 1


def test_marketing_without_consent_is_not_written(crm, outbox_path):
    customer = crm.customers.add(name="No marketing", consent_marketing=False)
    crm.notify.enqueue("file", customer_id=customer.id, recipient="n@example.com", body="Sale!",
                       purpose="marketing")
    allowed = crm.notify.enqueue("file", customer_id=customer.id, recipient="n@example.com",
                                 body="Your invoice", purpose="transactional")
    result = crm.notify.dispatch()
    assert result.sent == 1
    assert [r["id"] for r in read_records(outbox_path)] == [allowed]


def test_file_is_fsynced_once_per_batch(crm, outbox_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    for n in range(5):
        crm.notify.enqueue("file", recipient="a@example.com", body=f"message {n}")
    crm.notify.dispatch()
    assert len(synced) == 1
    assert len(read_records(outbox_path)) == 5


def test_unwritable_path_retries_later(crm_factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    crm = crm_factory(plugins=["notify"], config={"channels": {"file": {"path": str(blocker / "x.jsonl")}}})
    message = crm.notify.enqueue("file", recipient="a@example.com", body="hello")
    result = crm.notify.dispatch()
    assert (result.sent, result.retried) == (0, 1)
    [row] = crm.notify.outbox()
    assert row["id"] == message and row["status"] == "pending" and row["last_error"]


def test_send_without_open_is_a_permanent_error():
    message = crmcore.Message(1, "file", "a@example.com", None, "x", {}, "transactional", None, "k", 1)
    with pytest.raises(crmcore.PermanentError):
        FileChannel().send(message, FileOptions())


def test_message_line_is_one_line():
    message = crmcore.Message(7, "file", None, "s", "a\nb\u2029c", {"k": "v"}, "transactional", None, "key", 1)
    line = message_line(message)
    assert line.endswith("\n") and line.count("\n") == 1 and len(line.splitlines()) == 1
    assert json.loads(line)["body"] == "a\nb\u2029c"


# -- console ---------------------------------------------------------------------------------

def test_console_prints_to_stdout(crm, capsys):
    customer = crm.customers.add(name="李娜")
    crm.notify.enqueue("console", customer_id=customer.id, recipient="li.na@example.com", subject=SUBJECT,
                       body="您的积分已到账", payload={"points": 120})
    assert crm.notify.dispatch().sent == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert "li.na@example.com" in out and f"customer {customer.id}" in out
    assert SUBJECT in out and "您的积分已到账" in out and '"points": 120' in out


def test_console_stderr_option(crm_factory, capsys):
    crm = crm_factory(plugins=["notify"], config={"channels": {"console": {"stream": "stderr"}}})
    crm.notify.enqueue("console", recipient="ops", subject="Alert", body="disk full")
    crm.notify.dispatch()
    out, err = capsys.readouterr()
    assert out == ""
    assert "Alert" in err and "disk full" in err


def test_console_bad_stream(crm_factory):
    with pytest.raises(ConfigError, match=r"\[channels.console\]"):
        crm_factory(plugins=["notify"], config={"channels": {"console": {"stream": "printer"}}})


def test_render_message_without_recipient():
    message = crmcore.Message(3, "console", None, None, None, {}, "transactional", None, "key-3", 1)
    text = render_message(message)
    assert "message 3" in text and "(no recipient)" in text and text.endswith("\n\n")


# -- contract ----------------------------------------------------------------------------------

class TestFileChannelContract(ChannelContract):
    @pytest.fixture
    def component(self):
        return FileChannel()

    @pytest.fixture
    def channel_options(self, outbox_path):
        return {"path": str(outbox_path)}

    @pytest.fixture
    def delivered(self, outbox_path):
        return lambda: read_records(outbox_path) if outbox_path.exists() else []

    @pytest.fixture
    def provoke_failure(self, tmp_path):
        def provoke(kind):
            if kind == "transient":  # a full disk: writes fail with ENOSPC until space is freed
                if not os.path.exists("/dev/full"):
                    pytest.skip("no /dev/full on this system to fill the disk with")
                return {"options": {"path": "/dev/full"}}
            return {"options": {"path": str(tmp_path)}}  # a directory: the configuration is wrong
        return provoke

    def test_delivers_through_the_dispatcher(self, crm, delivered):
        crm.notify.enqueue("file", recipient="a@example.com", body="contract")
        crm.notify.dispatch()
        assert [r["body"] for r in delivered()] == ["contract"]


class TestConsoleChannelContract(ChannelContract):
    @pytest.fixture
    def component(self):
        return ConsoleChannel()

    @pytest.fixture
    def delivered(self, capsys):
        printed = []

        def arrived():  # one item per message printed so far (readouterr() consumes what it returns)
            printed.append(capsys.readouterr().out)
            return ["--- message" + part for part in "".join(printed).split("--- message")[1:]]
        return arrived

    @pytest.fixture
    def provoke_failure(self, monkeypatch):
        class Stuck:  # a non-blocking pipe whose reader is behind
            def write(self, text):
                raise BlockingIOError(11, "write would block")

            def flush(self):
                pass

        def provoke(kind):
            if kind == "transient":
                monkeypatch.setattr("sys.stdout", Stuck())
            else:
                closed = open(os.devnull, "w")
                closed.close()
                monkeypatch.setattr("sys.stdout", closed)
        return provoke

    def test_delivers_through_the_dispatcher(self, crm, delivered):
        crm.notify.enqueue("console", recipient="a@example.com", body="contract")
        crm.notify.dispatch()
        assert any("contract" in message for message in delivered())


def test_registered_by_the_notify_plugin(crm):
    info = {p.name: p for p in crm.plugin_info()}["notify"]
    assert info.distribution == "crmcore-notify"
    assert info.components["channels"][0] == "console"
    assert sorted(info.components["channels"]) == ["console", "dingtalk", "file", "sms-http", "smtp", "webhook",
                                                   "wecom"]
    addresses = {channel.name: channel.address for channel in crm.notify.channels()}
    assert addresses == {"console": None, "file": None, "smtp": "email", "sms-http": "phone", "webhook": None,
                         "wecom": None, "dingtalk": None}
