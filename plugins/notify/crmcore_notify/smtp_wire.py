"""The wire bytes of a plain email without :mod:`email`'s object model (the common case, fast).

:func:`crmcore_notify.smtp.build_email` makes an :class:`~email.message.EmailMessage` and the
standard library's generator writes it: every header is parsed into a parse tree and folded
again, a regular expression is compiled per message to check the multipart boundary.  That is
about a millisecond of CPU a message, more than the rest of a delivery together.

:func:`wire_bytes` writes the *same bytes* directly when every header is plain: printable ASCII
that fits on one line, addresses and display names that need no quoting or encoding, no
look-alike of an encoded word.  The bodies are encoded by the standard library's own function
(7bit, 8bit, quoted-printable or base64, chosen as it chooses), so only the layout around them
is written here.  Anything else returns None and goes the standard way: a Chinese subject, a
display name with a comma, a header that must be folded.  ``tests/notify/test_smtp_wire.py``
checks byte for byte that both ways agree (boundary and date aside).
"""

from __future__ import annotations

import random
import re
import sys
from datetime import datetime, timezone
from collections.abc import Callable
from email import contentmanager, policy
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import crmcore

    from .smtp import SmtpOptions

#: The function ``set_content`` encodes text with (7bit, 8bit, quoted-printable or base64, by its
#: heuristics); private in the standard library, so typeshed does not declare it.
_encode_text: Callable[[str, str, str | None, Any], tuple[str, str]] = \
    contentmanager._encode_text  # type: ignore[attr-defined]
#: The longest header line the standard policy leaves unfolded.
MAX_LINE = 78
_ATOM = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
#: A display name the standard library writes as it is: atoms separated by single spaces.
_PLAIN_NAME = re.compile(rf"{_ATOM}(?: {_ATOM})*\Z")
#: An address the standard library writes as it is: a dot-atom local part, a host name.
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
#: Unstructured text written as it is: printable ASCII words separated by single spaces.
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
#: Printable ASCII without spaces (an unsubscribe target).
_PRINTABLE = re.compile(r"[!-~]*\Z")
# The standard generator's boundary: 15 "=", a zero-padded random number, "==".
_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))


def plain_address(address: str) -> bool:
    """True for an address written as it is: a dot-atom local part, a host name."""
    return bool(_PLAIN_ADDRESS.match(address))


def _plain_text(value: str) -> bool:
    return bool(_PLAIN_TEXT.match(value)) and "=?" not in value


def _mailbox(name: str | None, address: str) -> str | None:
    """``Name <address>`` (or the bare address) as the standard library writes it, or None."""
    if not _PLAIN_ADDRESS.match(address):
        return None
    if not name:
        return address
    if not _PLAIN_NAME.match(name) or "=?" in name:
        return None
    return f"{name} <{address}>"


def _part(subtype: str, text: str, *, mime_version: bool) -> bytes:
    """A text part's headers and body, encoded as ``set_content(text, charset="utf-8")`` does."""
    cte, payload = _encode_text(text, "utf-8", None, policy.default)  # (its line length, line ends, 8bit: as build_email's)
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    if mime_version:
        head += "MIME-Version: 1.0\r\n"
    # The payload's lines end in "\n" (8bit text carries its bytes as surrogates), as the generator reads it.
    return (head + "\r\n").encode("ascii") + payload.encode("ascii", "surrogateescape").replace(b"\n", b"\r\n")


def _boundary(parts: list[bytes]) -> str:
    while True:
        boundary = "=" * 15 + f"{random.randrange(sys.maxsize):0{_BOUNDARY_WIDTH}d}" + "=="
        marker = b"--" + boundary.encode("ascii")
        if not any(marker in part for part in parts):
            return boundary


def wire_bytes(message: crmcore.Message, options: SmtpOptions, recipient: str, message_id: str,
               now: datetime | None = None) -> bytes | None:
    """The email :func:`~crmcore_notify.smtp.build_email` would send for ``message`` (CRLF line ends),
    or None if a header is not plain (see the module docstring).  ``recipient``: the normalized
    address; ``message_id``: the ``Message-ID``; ``now``: the ``Date`` (default: now, UTC)."""
    payload = message.payload or {}
    sender = options.sender or ""
    headers = [("From", _mailbox(options.sender_name, sender)), ("To", _mailbox(payload.get("to_name"), recipient))]
    reply_to = payload.get("reply_to") or options.reply_to
    if reply_to:
        headers.append(("Reply-To", reply_to if isinstance(reply_to, str) and _PLAIN_ADDRESS.match(reply_to) else None))
    subject = message.subject or ""
    headers.append(("Subject", subject if _plain_text(subject) else None))
    moment = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    headers.append(("Date", format_datetime(moment)))
    headers.append(("Message-ID", message_id if _plain_text(message_id) else None))
    lines = []
    for name, value in headers:
        if value is None or len(name) + 2 + len(value) > MAX_LINE:
            return None
        lines.append(f"{name}: {value}\r\n")
    unsubscribe = payload.get("unsubscribe_url")
    if message.purpose == "marketing" and unsubscribe:
        targets = [f"<{unsubscribe}>"]
        if options.unsubscribe_mailto:
            targets.append(f"<mailto:{options.unsubscribe_mailto}?subject=unsubscribe>")
        if not all(_PRINTABLE.match(target) for target in targets):
            return None  # the standard way raises the error that names it
        lines.append("List-Unsubscribe: " + ",\r\n ".join(targets) + "\r\n")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    head = "".join(lines)
    html = payload.get("html")
    if not html:
        return head.encode("ascii") + _part("plain", message.body or "", mime_version=True)
    parts = [_part("plain", message.body or "", mime_version=False), _part("html", html, mime_version=True)]
    boundary = _boundary(parts)
    return b"".join([
        f'{head}MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\n".encode("ascii"),
        parts[0], f"\r\n--{boundary}\r\n".encode("ascii"), parts[1], f"\r\n--{boundary}--\r\n".encode("ascii")])
