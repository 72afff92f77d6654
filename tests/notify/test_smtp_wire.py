"""The smtp channel writes plain emails directly (``crmcore_notify.smtp_wire``): the bytes must be
those the standard library's generator writes for :func:`build_email`'s message, boundary and
date aside, and anything not plain must go the standard way."""

from __future__ import annotations

import itertools
import re
from email import message_from_bytes, policy

import pytest
from crmcore_notify import SmtpOptions, build_email
from crmcore_notify import smtp as smtp_module
from crmcore_notify.smtp_wire import wire_bytes

import crmcore

BOUNDARY = re.compile(rb"={15}\d{19}==")
DATE = re.compile(rb"Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000\r\n")
TOKEN = "WzEsIioiLCJtYXJrZXRpbmciXQ.1rxvNq602y8cGa15jNwKvHTKH1tMzuKMSVTKKGTsDfM"

SUBJECTS = ["We miss you, Customer 7", "", "Hi", " leading space", "trailing space ", "two  spaces",
            "=?utf-8?q?looks_encoded?=", "订单 7 已发货", "x" * 69, "x" * 70, "tab\there", "Ünïcode", "a: b; c <d>"]
BODIES = ["Dear Customer 7,\n\nit has been a while.\n", "", "no newline at the end", "crlf\r\nlines\r\n",
          f"Unsubscribe: https://shop.example/u?t={TOKEN}\n", "你好 7,\n您的订单已发货。\n", "y" * 78 + "\n",
          "y" * 79 + "\n", "From the start\n.dot line\n", "trailing spaces   \nx\n", "bare\rcr\n",
          "\n".join(f"line {i} é" for i in range(30)) + "\n" + "z" * 200, "=3D and = signs\n", "tab\tx\n"]
HTML = [None, "", "<p>Dear Customer 7,</p>\n", f'<p><a href="https://shop.example/u?t={TOKEN}">Unsubscribe</a></p>\n',
        "<p>你好</p>", "<p>" + "w " * 100 + "</p>"]
NAMES = [None, "", "Customer 7", "O'Brien", "J. Smith", "Smith, John", "王 五", "Ann  Lee", '"quoted"', "a" * 70,
         "=?utf-8?b?eA==?="]
RECIPIENTS = ["c7@example.com", "first.last+tag@mail.example.co.uk", "Mixed@Example.COM", "o'brien@example.com",
              "x" * 60 + "@example.com"]
OPTIONS = [SmtpOptions(host="h", sender="shop@example.com"),
           SmtpOptions(host="h", sender="shop@example.com", sender_name="Example Shop", reply_to="help@example.com",
                       unsubscribe_mailto="unsub@example.com", message_id_domain="mail.example.com"),
           SmtpOptions(host="h", sender="shop@example.com", sender_name="示例商店"),
           SmtpOptions(host="h", sender="shop@example.com", sender_name="Shop, Inc.")]


def _message(i: int, subject: str, body: str, html: str | None, name: str | None, recipient: str,
             marketing: bool, reply_to: str | None = None) -> crmcore.Message:
    payload: dict[str, object] = {}
    if html is not None:
        payload["html"] = html
    if name is not None:
        payload["to_name"] = name
    if reply_to is not None:
        payload["reply_to"] = reply_to
    if marketing:
        payload["unsubscribe_url"] = f"https://shop.example/u?t={TOKEN}"
    return crmcore.Message(i, "smtp", recipient, subject, body, payload, "marketing" if marketing else "transactional",
                           i, f"campaign:x:{i}", 1)


def _standard(message: crmcore.Message, options: SmtpOptions) -> bytes:
    return build_email(message, options).as_bytes(policy=smtp_module._WIRE_POLICY)


def _normal(data: bytes) -> bytes:
    return DATE.sub(b"Date: D\r\n", BOUNDARY.sub(b"B", data), count=1)


def _cases() -> list[tuple[crmcore.Message, SmtpOptions]]:
    """Every subject, body, HTML part, name, recipient and option set at least once, mixed."""
    cycle = itertools.cycle
    axes = [SUBJECTS, BODIES, HTML, NAMES, RECIPIENTS, OPTIONS, [True, False], [None, "reply@example.com", "bad reply"]]
    longest = max(len(axis) for axis in axes)
    iters = [cycle(axis) for axis in axes]
    cases = []
    for i in range(longest * 7):  # lengths differ, so the combinations shift from lap to lap
        subject, body, html, name, recipient, options, marketing, reply_to = (next(it) for it in iters)
        cases.append((_message(i, subject, body, html, name, recipient, marketing, reply_to), options))
    # and every body and HTML part under plain headers (which the mix above rarely gives)
    plain = zip(cycle(["We miss you, Customer 7", "Hi", "a: b; c <d>", "x" * 69]),
                cycle([None, "", "Customer 7", "O'Brien"]), cycle(RECIPIENTS[:4]), cycle(OPTIONS[:2]), cycle([True, False]))
    for i, ((body, html), (subject, name, recipient, options, marketing)) in enumerate(
            zip(itertools.product(BODIES, HTML), plain)):
        cases.append((_message(1000 + i, subject, body, html, name, recipient, marketing), options))
    return cases


def test_plain_emails_are_written_as_the_standard_library_writes_them() -> None:
    direct = 0
    for message, options in _cases():
        recipient = crmcore.normalize_email(message.recipient or "")
        mid = smtp_module.message_id(message, options.message_id_domain or "example.com")
        wired = wire_bytes(message, options, recipient, mid)
        standard = _standard(message, options)
        if wired is None:
            continue
        direct += 1
        assert DATE.search(wired), wired[:400]
        assert _normal(wired) == _normal(standard), (message, options)
        # and it reads back as the same email
        parsed = message_from_bytes(wired, policy=policy.default)
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n").replace("\r", "\n") == \
            (message.body or "").replace("\r\n", "\n").replace("\r", "\n") + \
            ("" if (message.body or "").endswith(("\n", "\r")) else "\n")
    assert direct >= 40  # the plain ones do go the direct way (not a trivially passing test)


@pytest.mark.parametrize("field, value", [
    ("subject", "订单 7 已发货"), ("subject", "=?utf-8?q?x?="), ("subject", "two  spaces"), ("subject", "x" * 70),
    ("to_name", "Smith, John"), ("to_name", "王 五"), ("to_name", "J. Smith"), ("to_name", '"q"'),
    ("reply_to", "Help <help@example.com>")])
def test_headers_that_are_not_plain_go_the_standard_way(field: str, value: str) -> None:
    message = _message(1, "Hi", "body\n", None, None, "c1@example.com", True)
    if field == "subject":
        message = crmcore.Message(1, "smtp", "c1@example.com", value, "body\n", {}, "transactional", 1, "k:1", 1)
    else:
        message.payload[field] = value
    options = SmtpOptions(host="h", sender="shop@example.com")
    assert wire_bytes(message, options, "c1@example.com", "<m.1@example.com>") is None
    data, _ = smtp_module.email_bytes(message, options)
    assert _normal(data) == _normal(_standard(message, options))


def test_the_campaign_email_goes_the_direct_way() -> None:
    message = _message(7, "We miss you, Customer 7", f"Dear Customer 7,\n\nUnsubscribe: https://shop.example/u?t={TOKEN}\n",
                       f'<p><a href="https://shop.example/u?t={TOKEN}">Unsubscribe</a></p>\n', "Customer 7",
                       "c7@example.com", True)
    options = SmtpOptions(host="h", sender="shop@example.com")
    assert wire_bytes(message, options, "c7@example.com", "<m.7@example.com>") is not None
    data, mid = smtp_module.email_bytes(message, options)
    assert mid == smtp_module.message_id(message, "example.com")
    assert _normal(data) == _normal(_standard(message, options))


@pytest.mark.parametrize("url", ["https://shop.example/u?t=a b", "https://shop.example/ü", "https://x/\t"])
def test_an_unsubscribe_url_that_is_not_printable_is_refused_as_before(url: str) -> None:
    message = _message(1, "Hi", "body\n", None, None, "c1@example.com", True)
    message.payload["unsubscribe_url"] = url
    options = SmtpOptions(host="h", sender="shop@example.com")
    assert wire_bytes(message, options, "c1@example.com", "<m.1@example.com>") is None
    with pytest.raises(crmcore.PermanentError, match="printable ASCII"):
        smtp_module.email_bytes(message, options)
