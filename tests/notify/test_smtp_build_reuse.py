"""The smtp channel builds emails with header classes, policies and the sender's ``From``
made once (for speed): the bytes must be those the standard library's own header
registry and policy give, message after message."""

from __future__ import annotations

import re
from email import policy

from crmcore_notify import SmtpOptions, build_email
from crmcore_notify import smtp as smtp_module

import crmcore

STANDARD = policy.default.clone(refold_source="none")


def _message(i: int, **payload: object) -> crmcore.Message:
    return crmcore.Message(i, "smtp", f"kunde{i}@example.com", f"订单 {i} 已发货 - order {i} shipped " * 3,
                           f"你好 {i},\nyour order is on its way.\n" * 5, dict(payload),
                           "marketing" if payload else "transactional", None, f"k:{i}", 1)


def _wire(message: crmcore.Message, options: SmtpOptions) -> bytes:
    email = build_email(message, options)
    return email.as_bytes(policy=email.policy.clone(linesep="\r\n"))


def _same(a: bytes, b: bytes) -> bool:
    boundaries = re.compile(rb"=+\d+==")
    return boundaries.sub(b"B", a) == boundaries.sub(b"B", b)


def test_cached_headers_give_the_standard_bytes(monkeypatch) -> None:
    options = SmtpOptions(host="mail.example.com", sender="shop@example.com", sender_name="示例商店 Shop",
                          reply_to="help@example.com", unsubscribe_mailto="unsub@example.com")
    messages = [_message(1), _message(2, html="<p>你好</p>", to_name="王 五",
                                      unsubscribe_url="https://example.com/u?c=2"), _message(3)]
    monkeypatch.setattr(smtp_module, "formatdate", lambda **_: "Sat, 05 Dec 2026 20:00:00 +0000")
    cached = [_wire(m, options) for m in messages * 2]  # the second pass reuses every cached class and header
    # The standard library's way: a fresh header class per header, the policy and From parsed per message.
    monkeypatch.setattr(smtp_module, "_POLICY", STANDARD)
    monkeypatch.setattr(smtp_module, "_from_header", smtp_module._mailbox)
    standard = [_wire(m, options) for m in messages * 2]
    assert all(_same(a, b) for a, b in zip(cached, standard, strict=True))
    assert b"=?utf-8?b?" in cached[0]  # the encoded words are there (not a trivially equal pair)


def test_from_header_follows_the_options() -> None:
    first = SmtpOptions(host="h", sender="a@example.com", sender_name="A")
    second = SmtpOptions(host="h", sender="b@example.org", sender_name="B")
    assert str(build_email(_message(1), first)["From"]) == "A <a@example.com>"
    assert str(build_email(_message(1), second)["From"]) == "B <b@example.org>"
    assert smtp_module._from_header("A", "a@example.com") is smtp_module._from_header("A", "a@example.com")
