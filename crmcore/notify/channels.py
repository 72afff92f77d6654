"""What a notification channel is: the protocol plugins implement and what it exchanges.

A :class:`Channel` sends one :class:`Message` and returns :class:`Delivered`,
or raises :class:`TransientError` (retry later) or :class:`PermanentError`
(give up on this message).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from ..application.components import Component


class TransientError(Exception):
    """Delivery failed but may succeed later (timeout, 5xx, connection refused).

    :param message_only: the failure concerns this message alone (e.g. a 4xx
        reply refusing its recipient for now): it is retried, but it does not
        count toward the channel being down.
    """

    def __init__(self, *args: object, message_only: bool = False) -> None:
        super().__init__(*args)
        self.message_only = message_only


class PermanentError(Exception):
    """Delivery can never succeed (bad address, 4xx, rejected recipient, misconfiguration)."""


@attrs.frozen
class Message:
    """A message as a channel sees it."""

    id: int
    channel: str
    recipient: str | None
    subject: str | None
    body: str | None
    payload: dict[str, Any]
    purpose: str
    customer_id: int | None
    idempotency_key: str
    attempts: int


@attrs.frozen
class Delivered:
    """What a channel may return from :meth:`Channel.send` instead of a bare id.

    :ivar provider_id: the provider's id for the message (stored as ``provider_id``).
    :ivar details: anything worth keeping about the delivery (SMS segments,
        the server's reply, ...); stored as the message's ``delivery`` JSON.
    """

    provider_id: str | None = None
    details: Mapping[str, Any] = attrs.field(factory=dict)


class Channel(Component):
    """Base class of notification channels.

    :cvar address: which customer field is the recipient: ``"email"``,
        ``"phone"`` or None (the channel needs no per-customer address).
    :cvar resend_in_doubt: True if the receiving end de-duplicates on the
        message's idempotency key, so a message whose outcome is unknown (the
        dispatcher died during the send) may safely be sent again.  False
        (the default) dead-letters such a message instead of risking a
        duplicate.
    """

    address: str | None = None
    resend_in_doubt: bool = False

    def open(self, options: Any) -> None:
        """Prepare for a batch (e.g. connect); called once per dispatch and thread.

        Raise :class:`PermanentError` for a misconfiguration (the batch's
        messages are dead-lettered with the reason), anything else to retry later.
        """

    def send(self, message: Message, options: Any) -> str | Delivered | None:
        """Deliver one message; return the provider's message id (or a :class:`Delivered`).

        Raise :class:`TransientError` to retry later, :class:`PermanentError`
        to give up at once.  An :class:`OSError` (refused connection, timeout)
        counts as transient.  Any other exception (``ValueError`` building a
        header, ...) is taken as this message's fault: it is dead at once with
        the exception as the reason (see :func:`is_permanent`).
        """
        raise NotImplementedError

    def prepare(self, message: Message, options: Any) -> PreparedSend | None:
        """Optional first half of a two-step send: everything that delivers nothing yet
        (build the message, open the envelope: SMTP ``MAIL``/``RCPT``), returning a
        :class:`PreparedSend` whose ``finish()`` delivers it.  The dispatcher then overlaps this
        half with the commit that marks the message ``sending``, and delivers only after that
        commit, so the in-doubt window stays one message.  Raise as :meth:`send` does.
        None (the default): the dispatcher calls :meth:`send`.
        """
        return None

    def close(self) -> None:
        """End the batch (e.g. disconnect)."""


class PreparedSend(Protocol):
    """A message :meth:`Channel.prepare` made ready: nothing has been delivered yet."""

    def finish(self) -> str | Delivered | None:
        """Deliver it; returns and raises as :meth:`Channel.send`."""

    def abort(self) -> None:
        """Do not deliver it (the dispatcher lost the claim or is stopping); the channel stays usable."""


def is_permanent(exc: BaseException) -> bool:
    """True if the failure ``exc`` of a send means this message can never go.

    :class:`PermanentError` is; :class:`TransientError` and :class:`OSError`
    (network trouble) are not; any other exception comes from this message's
    content (a header with CR/LF, text that cannot be encoded, ...), so
    retrying the same message cannot help: it is permanent too.
    """
    return not isinstance(exc, (TransientError, OSError))


def is_channel_fault(exc: BaseException) -> bool:
    """True if the failure ``exc`` says the channel (its server, the network) is
    not working, so that a run of them takes the channel as down.  A failure
    that concerns one message (permanent, or ``message_only``) never does."""
    if isinstance(exc, TransientError):
        return not exc.message_only
    return isinstance(exc, OSError)


@attrs.frozen
class DispatchResult:
    """What one dispatch did.

    :ivar deferred: messages handed back without an attempt because their
        channel was down (or the dispatcher was asked to stop).
    """

    sent: int = 0
    retried: int = 0
    dead: int = 0
    suppressed: int = 0
    deferred: int = 0

    def __add__(self, other: DispatchResult) -> DispatchResult:
        return DispatchResult(**{k: getattr(self, k) + getattr(other, k) for k in attrs.fields_dict(DispatchResult)})

    @property
    def total(self) -> int:
        """Every message this dispatch handled, whatever became of it."""
        return self.sent + self.retried + self.dead + self.suppressed + self.deferred
