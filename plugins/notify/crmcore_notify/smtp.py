"""The ``smtp`` channel: email through an SMTP server (stdlib :mod:`smtplib`).

One connection serves a whole dispatch batch: :meth:`SmtpChannel.open`
connects (and says ``EHLO``, ``STARTTLS``, ``AUTH`` as configured), every
:meth:`SmtpChannel.send` reuses it, :meth:`SmtpChannel.close` says ``QUIT``.
A connection the server dropped mid-batch is re-opened by the next send.

What a message becomes (:func:`build_email`):

* ``multipart/alternative`` with the message's ``body`` as the text part and
  ``payload["html"]`` (when given) as the HTML part; UTF-8 throughout, so
  Chinese subjects and display names are encoded words, not mojibake;
* ``From`` = ``sender_name <sender>``; ``To`` = ``payload["to_name"] <recipient>``;
  ``Reply-To`` from the options or ``payload["reply_to"]``;
* ``Message-ID`` derived from the idempotency key: every attempt of one
  message carries the same id, so a receiver (or a person reading headers)
  can tell a resend from a second message;
* marketing messages with ``payload["unsubscribe_url"]`` get
  ``List-Unsubscribe`` (the URL, plus ``mailto:`` when ``unsubscribe_mailto``
  is configured) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
  (RFC 8058), which large mailbox providers require for bulk mail.

Errors: a recipient that is not an email address, or a 5xx reply to
``RCPT``/``DATA``, is a :class:`crmcore.PermanentError` (the message is
dead-lettered with the server's reply).  A host name that does not resolve
or a refused login is a permanent misconfiguration of the channel.  4xx
replies, refused or dropped connections and timeouts are transient (retried
with backoff).

Most emails (every header plain ASCII on one line) are not built as objects at all:
:mod:`crmcore_notify.smtp_wire` writes the bytes :func:`build_email` and the standard
generator would give, about 20 times cheaper (:func:`email_bytes` picks the way).

A server that advertises ``PIPELINING`` (RFC 2920; most do) gets ``MAIL``, ``RCPT`` and
``DATA`` in one write (:mod:`crmcore_notify.smtp_pipeline`): two round trips a message instead
of four, each reply still classified as above.

The provider message id recorded for a sent message is its ``Message-ID``;
the server's reply to ``DATA`` (often ``queued as ...``) is kept in the
message's delivery details.
"""

from __future__ import annotations

import functools
import hashlib
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TypeVar
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email import policy
from email.message import EmailMessage
from email.utils import formatdate

import attrs

import crmcore

from .channel_secrets import channel_secret
from .smtp_pipeline import envelope_bytes, exchange, pipelines
from .smtp_wire import wire_bytes

SECURITY = ("plain", "starttls", "tls")
DEFAULT_PORTS = {"plain": 25, "starttls": 587, "tls": 465}
_T = TypeVar("_T")


def _one_of(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute[str], str], None]:
    """An attrs validator: the value is one of ``choices``."""
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")
    return check


def _port(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 0 < value < 65536:
        raise ValueError(f"{attribute.name} must be between 1 and 65535, got {value}")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _address(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None:
        crmcore.normalize_email(value)  # ValueError names the address


@attrs.frozen
class SmtpOptions:
    """Options of the ``smtp`` channel (``[channels.smtp]``).

    :ivar host: the SMTP server.
    :ivar port: defaults by ``security``: 25 (plain), 587 (starttls), 465 (tls).
    :ivar security: ``"plain"``, ``"starttls"`` (upgrade after connecting) or
        ``"tls"`` (implicit TLS from the first byte).
    :ivar username: log in with this user (``AUTH``), if set.
    :ivar password: its password; prefer ``password_env``.
    :ivar password_env: name of an environment variable holding the password
        (keeps secrets out of crm.toml).
    :ivar password_file: a file holding the password (a mounted secret).
    :ivar sender: the envelope sender and ``From`` address (required).
    :ivar sender_name: display name in ``From`` (any language).
    :ivar reply_to: a ``Reply-To`` address.
    :ivar unsubscribe_mailto: an address added to ``List-Unsubscribe`` as
        ``mailto:`` next to the message's unsubscribe URL.
    :ivar message_id_domain: right-hand side of ``Message-ID`` (default: the
        sender's domain).
    :ivar timeout: seconds for connecting and for each server reply.
    :ivar ca_file: trust this CA bundle (PEM) instead of the system's.
    :ivar verify: check the server's certificate and host name (TLS).
    """

    host: str = "localhost"
    port: int | None = attrs.field(default=None, validator=_port)
    security: str = attrs.field(default="plain", validator=_one_of(SECURITY))
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    sender: str | None = attrs.field(default=None, validator=_address)
    sender_name: str | None = None
    reply_to: str | None = attrs.field(default=None, validator=_address)
    unsubscribe_mailto: str | None = attrs.field(default=None, validator=_address)
    message_id_domain: str | None = None
    timeout: float = attrs.field(default=30.0, validator=_positive)
    ca_file: str | None = None
    verify: bool = True

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    def secret(self) -> str | None:
        """The password, from ``password_env`` or ``password_file`` when set."""
        return channel_secret("password", "[channels.smtp]", self.password, self.password_env, self.password_file)


class SmtpChannel(crmcore.Channel):
    """Sends email through one SMTP connection per dispatch batch."""

    name = "smtp"
    description = "email through an SMTP server (plain, STARTTLS or TLS; HTML + text; List-Unsubscribe)"
    options_type = SmtpOptions
    address = "email"

    def __init__(self) -> None:
        # One channel object serves every dispatcher thread; each has its own connection.
        self._local = threading.local()

    def open(self, options: SmtpOptions) -> None:
        if not options.sender:
            raise crmcore.PermanentError("smtp: no sender address: set [channels.smtp] sender")
        self._local.smtp = connect(options)

    def send(self, message: crmcore.Message, options: SmtpOptions) -> crmcore.Delivered:
        return self.prepare(message, options).finish()

    def prepare(self, message: crmcore.Message, options: SmtpOptions) -> _Prepared:
        """Build the email and open its envelope (``MAIL``, ``RCPT``): nothing is delivered
        until ``finish()`` sends ``DATA``; ``abort()`` resets the envelope.

        A server that pipelines (:mod:`crmcore_notify.smtp_pipeline`) gets the envelope with
        ``DATA`` in ``finish()``'s one write: here its commands are only checked and kept."""
        try:
            data, mid = email_bytes(message, options)
        except (ValueError, TypeError, LookupError) as exc:  # this message's content (e.g. CR/LF in a header)
            raise crmcore.PermanentError(f"smtp: message {message.id} cannot be built: {exc}") from None
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if smtp is None:  # first send, or the server dropped us mid-batch
            smtp = self._local.smtp = connect(options)
        recipient = message.recipient or ""
        if pipelines(smtp):
            try:
                commands = envelope_bytes(smtp, options.sender or "", recipient)
            except ValueError as exc:  # e.g. non-ASCII without SMTPUTF8, CR/LF: nothing was written
                raise crmcore.PermanentError(f"smtp RCPT TO {recipient!r}: {exc}") from None
            return _Prepared(self, smtp, data, mid, commands, recipient)
        self._guarded(lambda: envelope(smtp, options.sender or "", recipient))
        return _Prepared(self, smtp, data, mid)

    def _guarded(self, step: Callable[[], _T]) -> _T:
        """Run an exchange with the server; a dropped connection is closed (the next send reconnects)."""
        try:
            return step()
        except (smtplib.SMTPServerDisconnected, OSError):
            self._drop()
            raise
        except Exception:
            smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
            if smtp is not None and smtp.sock is None:  # closed on a refusal (see smtp_pipeline.exchange)
                self._drop()
            raise

    def close(self) -> None:
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()  # the server is gone already; nothing to say goodbye to

    def _drop(self) -> None:
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            smtp.close()


# -- connecting ----------------------------------------------------------------------------

def tls_context(options: SmtpOptions) -> ssl.SSLContext:
    """The TLS settings: the system's CAs (or ``ca_file``), verification as configured."""
    context = ssl.create_default_context(cafile=options.ca_file)
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect(options: SmtpOptions) -> smtplib.SMTP:
    """An open, greeted (and, as configured, encrypted and logged-in) connection."""
    where = f"{options.host}:{options.effective_port}"
    try:
        if options.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(options.host, options.effective_port, timeout=options.timeout,
                                                  context=tls_context(options))
        else:
            smtp = smtplib.SMTP(options.host, options.effective_port, timeout=options.timeout)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:  # the resolver is down, not the name wrong
            raise crmcore.TransientError(f"smtp: cannot resolve {options.host!r} right now: {exc}") from None
        raise crmcore.PermanentError(f"smtp: unknown host {options.host!r} ([channels.smtp] host): {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        raise crmcore.PermanentError(f"smtp: certificate of {where} not trusted: {exc.verify_message}") from None
    except OSError as exc:
        raise crmcore.TransientError(f"smtp: cannot connect to {where}: {exc}") from None
    try:
        smtp.ehlo()
        if options.security == "starttls":
            smtp.starttls(context=tls_context(options))
            smtp.ehlo()
        if options.username:
            smtp.login(options.username, options.secret() or "")
    except smtplib.SMTPAuthenticationError as exc:
        smtp.close()
        raise crmcore.PermanentError(f"smtp: login to {where} as {options.username!r} refused: "
                                     f"{exc.smtp_code} {_text(exc.smtp_error)}") from None
    except UnicodeEncodeError:
        smtp.close()  # smtplib sends credentials as ASCII only
        raise crmcore.PermanentError(f"smtp: user name and password for {where} must be ASCII") from None
    except smtplib.SMTPNotSupportedError as exc:
        smtp.close()
        raise crmcore.PermanentError(f"smtp: {where} does not support {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        smtp.close()
        raise crmcore.PermanentError(f"smtp: certificate of {where} not trusted: {exc.verify_message}") from None
    except BaseException:
        smtp.close()
        raise
    return smtp


@attrs.define
class _Prepared:
    """An email whose envelope is open on ``smtp`` (see :meth:`SmtpChannel.prepare`)."""

    channel: SmtpChannel
    smtp: smtplib.SMTP
    data: bytes
    message_id: str
    commands: bytes | None = None  # a pipelined envelope, not written yet
    recipient: str = ""

    def finish(self) -> crmcore.Delivered:
        """``DATA``: the server accepts the email (or refuses it) at its end."""
        if self.commands is not None:
            commands = self.commands
            reply = self.channel._guarded(lambda: deliver_pipelined(self.smtp, commands, self.data, self.recipient))
        else:
            reply = self.channel._guarded(lambda: deliver(self.smtp, self.data))
        return crmcore.Delivered(self.message_id, {"smtp_reply": reply})

    def abort(self) -> None:
        """``RSET``: the envelope is dropped, the connection carries the next message (a
        pipelined envelope was never written: nothing to reset)."""
        if self.commands is None:
            _reset(self.smtp)


def transmit(smtp: smtplib.SMTP, data: bytes, sender: str, recipient: str) -> str:
    """``MAIL``, ``RCPT``, ``DATA`` (``data``: the message, CRLF line ends) for one
    recipient; returns the server's final reply.

    Done step by step (not ``send_message``) to classify each reply: 5xx is
    permanent, 4xx transient; a refused step is reset so the connection can
    carry the next message.  A refusal of the recipient (any reply to ``RCPT``,
    or an address the server cannot take) concerns this message only, never
    the channel.
    """
    envelope(smtp, sender, recipient)
    return deliver(smtp, data)


def envelope(smtp: smtplib.SMTP, sender: str, recipient: str) -> None:
    """``MAIL`` and ``RCPT`` (see :func:`transmit`): nothing is delivered yet."""
    reply: bytes | str  # smtplib's errors carry either
    code, reply = smtp.mail(sender)
    _check("MAIL FROM", code, reply, smtp, (250,))
    try:
        code, reply = smtp.rcpt(recipient)
    except (smtplib.SMTPNotSupportedError, ValueError) as exc:  # e.g. non-ASCII without SMTPUTF8, CR/LF
        _reset(smtp)
        raise crmcore.PermanentError(f"smtp RCPT TO {recipient!r}: {exc}") from None
    _check(f"RCPT TO {recipient}", code, reply, smtp, (250, 251), message_only=True)


def deliver(smtp: smtplib.SMTP, data: bytes) -> str:
    """``DATA`` after :func:`envelope`; returns the server's final reply (see :func:`transmit`)."""
    reply: bytes | str
    try:
        code, reply = smtp.data(data)
    except smtplib.SMTPDataError as exc:
        code, reply = exc.smtp_code, exc.smtp_error
    _check("DATA", code, reply, smtp, (250,))
    return f"{code} {_text(reply)}"


def deliver_pipelined(smtp: smtplib.SMTP, commands: bytes, data: bytes, recipient: str) -> str:
    """:func:`transmit` in two round trips (:func:`crmcore_notify.smtp_pipeline.exchange`): each
    reply classified as step by step; returns the server's final reply."""
    def check(step: str, code: int, reply: bytes | str, ok: tuple[int, ...], message_only: bool) -> None:
        _check(step, code, reply, smtp, ok, message_only=message_only)

    code, reply = exchange(smtp, commands, data, recipient, check)
    _check("DATA", code, reply, smtp, (250,))
    return f"{code} {_text(reply)}"


def _reset(smtp: smtplib.SMTP) -> None:
    """``RSET``, so the connection can carry the next message."""
    try:
        smtp.rset()
    except (smtplib.SMTPException, OSError):
        pass


def _check(step: str, code: int, reply: bytes | str, smtp: smtplib.SMTP, ok: tuple[int, ...],
           message_only: bool = False) -> None:
    if code in ok:
        return
    if code == -1:  # smtplib's "connection closed" marker
        raise smtplib.SMTPServerDisconnected(f"server closed the connection at {step}")
    _reset(smtp)
    detail = f"smtp {step}: {code} {_text(reply)}"
    if 500 <= code < 600:
        raise crmcore.PermanentError(detail)
    raise crmcore.TransientError(detail, message_only=message_only)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


# -- building the email --------------------------------------------------------------------

class _HeaderClasses(HeaderRegistry):
    """The standard header registry, building each header class once.

    :class:`email.headerregistry.HeaderRegistry` creates a new class (``type(...)``)
    for every header it parses: about a fifth of building an email.  The classes
    are the same every time, so they are kept; the parsed headers are identical.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# refold_source="none": a header set raw (List-Unsubscribe) goes out exactly as given;
# headers set the usual way are still folded and RFC 2047-encoded as needed.
# Built once (a policy clone per message costs more than it looks); _WIRE_POLICY writes CRLF line ends.
_POLICY = policy.default.clone(refold_source="none", header_factory=_HeaderClasses())
_WIRE_POLICY = _POLICY.clone(linesep="\r\n")


@functools.lru_cache(maxsize=64)
def _from_header(name: str | None, address: str) -> BaseHeader:
    """The parsed ``From`` header of a sender (the same for every message of a channel)."""
    header: BaseHeader = _POLICY.header_store_parse("From", _mailbox(name, address))[1]
    return header


def message_id(message: crmcore.Message, domain: str) -> str:
    """A ``Message-ID`` that is the same for every attempt of one message."""
    digest = hashlib.sha256(message.idempotency_key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}.{message.id}@{domain}>"


def _mailbox(name: str | None, address: str) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=name or "", username=local, domain=domain)


def _recipient(message: crmcore.Message, options: SmtpOptions) -> str:
    """The normalized recipient (a PermanentError for an invalid one, or without a sender)."""
    try:
        recipient = crmcore.normalize_email(message.recipient or "")
    except ValueError as exc:
        raise crmcore.PermanentError(f"smtp: invalid recipient: {exc}") from None
    if not options.sender:
        raise crmcore.PermanentError("smtp: no sender address: set [channels.smtp] sender")
    return recipient


def email_bytes(message: crmcore.Message, options: SmtpOptions) -> tuple[bytes, str]:
    """The email for ``message`` as sent (CRLF line ends) and its ``Message-ID``: written directly
    when every header is plain (:func:`crmcore_notify.smtp_wire.wire_bytes`, the same bytes a
    thousand microseconds cheaper), else built by :func:`build_email`."""
    recipient = _recipient(message, options)
    sender = options.sender or ""
    mid = message_id(message, options.message_id_domain or sender.rpartition("@")[2])
    data = wire_bytes(message, options, recipient, mid)
    if data is not None:
        return data, mid
    email = build_email(message, options)
    # CRLF line ends: smtplib sends bytes as they are, and a server reads "\n" lines as one long line.
    return email.as_bytes(policy=_WIRE_POLICY if email.policy is _POLICY
                          else email.policy.clone(linesep="\r\n")), str(email["Message-ID"])


def build_email(message: crmcore.Message, options: SmtpOptions) -> EmailMessage:
    """The MIME message for ``message`` (see the module docstring)."""
    recipient = _recipient(message, options)
    sender = options.sender or ""
    payload = message.payload or {}
    email = EmailMessage(policy=_POLICY)
    email["From"] = _from_header(options.sender_name, sender)
    email["To"] = _mailbox(payload.get("to_name"), recipient)
    if options.reply_to or payload.get("reply_to"):
        email["Reply-To"] = payload.get("reply_to") or options.reply_to
    email["Subject"] = message.subject or ""
    email["Date"] = formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = message_id(message, options.message_id_domain or sender.rpartition("@")[2])
    unsubscribe = payload.get("unsubscribe_url")
    if message.purpose == "marketing" and unsubscribe:
        targets = [f"<{unsubscribe}>"]
        if options.unsubscribe_mailto:
            targets.append(f"<mailto:{options.unsubscribe_mailto}?subject=unsubscribe>")
        if any(ch.isspace() or ord(ch) < 0x21 or ord(ch) > 0x7E for target in targets for ch in target):
            raise crmcore.PermanentError("smtp: the unsubscribe URL must be printable ASCII without spaces "
                                         "(percent-encode it)")
        # Set raw, one target a line: RFC 2369 wants each URL as <URL>, and the default policy
        # would RFC 2047-encode a URL longer than a line (=?utf-8?q?=3Chttps...), which mail
        # clients cannot use for one-click unsubscribe (RFC 8058).
        email.set_raw("List-Unsubscribe", ",\n ".join(targets))
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email.set_content(message.body or "", charset="utf-8")
    if payload.get("html"):
        email.add_alternative(payload["html"], subtype="html", charset="utf-8")
    return email
