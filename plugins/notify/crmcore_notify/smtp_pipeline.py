"""SMTP command pipelining (RFC 2920): one message in two round trips instead of four.

Step by step (:mod:`smtplib`'s ``mail``, ``rcpt``, ``data``) every command waits for its reply:
``MAIL``, ``RCPT``, ``DATA``, then the content, four round trips and as many wake-ups of both
ends.  A server that advertises ``PIPELINING`` takes ``MAIL``, ``RCPT`` and ``DATA`` in one write
and answers them together; only the content must wait for the ``354`` to ``DATA``.

Each reply is still checked on its own and in order, as step by step (:func:`exchange`): a
refused ``MAIL`` is the message's error even though the server then refuses ``RCPT`` and ``DATA``
too (they had no transaction), a refused ``RCPT`` concerns this message only.  Nothing is written
until the whole envelope is known to be writable (:func:`envelope_bytes` raises first, as
:mod:`smtplib` would), so an address the server cannot take leaves the connection untouched.
"""

from __future__ import annotations

import functools
import re
import smtplib
from collections.abc import Callable

from .smtp_wire import plain_address

CRLF = b"\r\n"
_LEADING_DOT = re.compile(rb"(?m)^\.")


def pipelines(smtp: smtplib.SMTP) -> bool:
    """True if the server said ``PIPELINING`` to ``EHLO``."""
    return bool(smtp.does_esmtp and smtp.has_extn("pipelining"))


def envelope_bytes(smtp: smtplib.SMTP, sender: str, recipient: str) -> bytes:
    """``MAIL FROM``, ``RCPT TO`` and ``DATA`` as :mod:`smtplib` writes them (same quoting, same
    command encoding).  ValueError (a line break, an address the encoding cannot carry) before
    anything is written, as :meth:`smtplib.SMTP.putcmd` raises it."""
    lines = [f"mail FROM:{_quoted(sender)}", f"rcpt TO:{_route(recipient)}", "data"]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError(f"command and arguments contain prohibited newline characters: {line!r}")
    return "".join(line + "\r\n" for line in lines).encode(smtp.command_encoding)


@functools.lru_cache(maxsize=64)
def _quoted(sender: str) -> str:
    """The sender as ``MAIL FROM`` carries it (the same for every message of a channel)."""
    return smtplib.quoteaddr(sender)


def _route(address: str) -> str:
    """``<address>``, as :func:`smtplib.quoteaddr` gives it: a plain address (a dot-atom and a
    host name) is what its parser would return unchanged, without running the parser."""
    return f"<{address}>" if plain_address(address) else smtplib.quoteaddr(address)


def content_bytes(data: bytes) -> bytes:
    """The message content as sent after ``354``: leading dots doubled, ended by CRLF "." CRLF."""
    if data.startswith(b".") or b"\n." in data:  # (the regular expression only when it has work)
        data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(CRLF):
        data += CRLF
    return data + b"." + CRLF


Check = Callable[[str, int, "bytes | str", tuple[int, ...], bool], None]


def exchange(smtp: smtplib.SMTP, commands: bytes, data: bytes, recipient: str, check: Check) -> tuple[int, bytes]:
    """Write ``commands`` (from :func:`envelope_bytes`), read the three replies, send the content
    after ``354``; returns the server's reply to the content.

    ``check(step, code, reply, ok, message_only)`` raises for a reply not in ``ok``, as for the
    step-by-step exchange; the replies are read (all three) before any is checked, so the
    connection is left between transactions whatever the outcome.
    """
    smtp.send(commands)
    replies = [smtp.getreply() for _ in range(3)]
    (mail_code, mail_reply), (rcpt_code, rcpt_reply), (data_code, data_reply) = replies
    if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
        # A server that opened DATA with no valid recipient (RFC 2920 says it must refuse it):
        # the connection is mid-message, and ending the content would send an empty mail.
        # Closed: the channel drops it and the next message connects again; the refusal stands.
        smtp.close()
    check("MAIL FROM", mail_code, mail_reply, (250,), False)
    check(f"RCPT TO {recipient}", rcpt_code, rcpt_reply, (250, 251), True)
    check("DATA", data_code, data_reply, (354,), False)
    smtp.send(content_bytes(data))
    return smtp.getreply()
