"""Consent: who may be sent what, through which channel.

A decision is recorded per customer, channel (``"*"`` = every channel) and
purpose (``marketing`` or ``transactional``), with its source (``cli``,
``link``, ``import``, ...), time and actor.  Every decision is appended to
``consent_history`` (:func:`history`; append-only, never rewritten); the latest
one per key stands, and ``customer_consents`` holds it (:func:`decisions`: the
current state, a projection of the history).  When a message is about to be queued or sent:

1. the decision for the channel decides when it is at least as recent as the
   one for every channel (a later "unsubscribe from everything" beats an
   earlier "yes to email", and the other way round);
2. a withdrawal for every channel refuses;
3. marketing to a customer whose channel flag (``consent_email`` /
   ``consent_sms``) is off is refused, even with a grant for every channel;
4. a grant for every channel lets the message go;
5. without a decision, transactional messages go and marketing follows the
   channel's default policy (``[notify.consent]``): ``opt-in`` needs the
   customer's ``consent_marketing`` flag, ``opt-out`` does not.

``consent_marketing`` is the standing marketing decision for every channel
(:mod:`crmcore.application.consents`): recording one sets the flag, setting
the flag records one.

The rule is one SQL expression (:func:`refusal_column`), so a campaign applies
it to a whole segment in one query and a single message uses the very same
logic.  The dispatcher asks again before sending (:func:`refusals`), so a
withdrawal between enqueue and delivery is honoured.

Unsubscribe links carry a token signed with ``[notify] unsubscribe_secret`` (or the
environment variable named by ``unsubscribe_secret_env``)
(itsdangerous, HMAC-SHA256): verifying it needs no database lookup.
:mod:`crmcore.notify.unsubscribe` is the page such a link opens (GET: a
confirmation, POST: the withdrawal, also a mail provider's RFC 8058 one-click
request), served by ``crm serve`` at ``/unsubscribe`` or as the WSGI
application :func:`unsubscribe_app`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import itsdangerous
from sqlalchemy import and_, case, false, literal, null, or_, select, true

from ..application import consent_history
from ..application.consents import write_decision
from ..domain.errors import ConfigError, CRMError, ValidationError
from ..store import tables

if TYPE_CHECKING:
    from ..app import CRM
    from ..application.uow import UnitOfWork

consents = tables.customer_consents
customers = tables.customers
PURPOSES = ("transactional", "marketing")
EVERY_CHANNEL = "*"
# The customer flag that counts as consent for a channel, by the channel's address kind.
CHANNEL_FLAGS = {"email": "consent_email", "phone": "consent_sms"}
TOKEN_SALT = "crmcore.unsubscribe"


class InvalidToken(CRMError):
    """An unsubscribe token that was not signed with the configured secret."""


@attrs.frozen
class Decision:
    """A recorded consent decision."""

    customer_id: int
    channel: str
    purpose: str
    granted: bool
    source: str
    recorded_at: datetime
    actor: str | None = None


# -- recording ----------------------------------------------------------------------------------

def record(uow: UnitOfWork, customer_id: int, granted: bool, channel: str = EVERY_CHANNEL,
           purpose: str = "marketing", source: str = "cli", at: datetime | None = None) -> Decision:
    """Record a decision in ``uow``: appended to the history, and replacing the previous
    one for the same key in the current state (``customer_consents``).

    A marketing decision for every channel also sets the customer's
    ``consent_marketing`` flag, in the same transaction: the flag is that
    decision (:mod:`crmcore.application.consents`).
    """
    check_purpose(purpose)
    with uow.scoped():  # NotFound for an unknown customer, or one the acting user cannot see
        uow.customers.get(customer_id)
    recorded_at = at or uow.now
    write_decision(uow, customer_id, granted, channel, purpose, source, recorded_at)
    return Decision(customer_id, channel, purpose, granted, source, recorded_at, uow.actor)


def decisions(uow: UnitOfWork, customer_id: int) -> list[Decision]:
    """The standing decisions of a customer: the latest per channel and purpose."""
    rows = uow.conn.execute(select(consents).where(consents.c.customer_id == customer_id).order_by(
        consents.c.channel, consents.c.purpose))
    return [Decision(**r._mapping) for r in rows]


def history(uow: UnitOfWork, customer_id: int) -> list[Decision]:
    """Every decision ever recorded for a customer, oldest first (in recording order); the last
    one per channel and purpose is the standing one (:func:`decisions`)."""
    return [Decision(**row) for row in consent_history.read(uow.conn, customer_id)]


def check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ValidationError.single("purpose", f"must be one of {', '.join(PURPOSES)}, got {purpose!r}", "consent")


# -- deciding -----------------------------------------------------------------------------------

def refusal_column(channel: str, address: str | None, purpose: str, policy: str, customer_id: Any) -> Any:
    """A SQL expression: NULL when a message may go to the customer ``customer_id``
    (a column or value), else the reason.  See the module docstring for the rule."""
    exact, every = consents.alias("consent_exact"), consents.alias("consent_every")

    exact_granted = select(exact.c.granted).where(
        exact.c.customer_id == customer_id, exact.c.channel == channel, exact.c.purpose == purpose).scalar_subquery()
    exact_at = select(exact.c.recorded_at).where(
        exact.c.customer_id == customer_id, exact.c.channel == channel, exact.c.purpose == purpose).scalar_subquery()
    every_granted = select(every.c.granted).where(
        every.c.customer_id == customer_id, every.c.channel == EVERY_CHANNEL,
        every.c.purpose == purpose).scalar_subquery()
    every_at = select(every.c.recorded_at).where(
        every.c.customer_id == customer_id, every.c.channel == EVERY_CHANNEL,
        every.c.purpose == purpose).scalar_subquery()
    exact_stands = and_(exact_granted.is_not(None), or_(every_granted.is_(None), exact_at >= every_at))
    # An alias, so the subqueries never correlate with a query over customers itself.
    cust = customers.alias("consent_customer")
    flag_name = CHANNEL_FLAGS.get(address or "")
    owner = select(cust.c.consent_marketing).where(cust.c.id == customer_id).scalar_subquery()
    flag_value = select(cust.c[flag_name]).where(cust.c.id == customer_id).scalar_subquery() if flag_name else None
    default: list[tuple[Any, Any]] = []
    if purpose == "marketing":
        if policy == "opt-in":
            default.append((owner == false(), literal("no marketing consent")))
        if flag_value is not None:
            default.append((flag_value == false(), literal(f"opted out of {address}")))
    # A channel kind switched off (consent_email false) beats a grant for every channel: the
    # flag opts the customer out of that kind of channel, a "*" grant says yes to marketing.
    opted_out = default[-1:] if flag_value is not None else []
    # An archived customer is no longer a live customer: no message of any purpose goes to them
    # (campaigns, triggers and the dispatcher all decide through this expression).
    archived = select(cust.c.archived_at).where(cust.c.id == customer_id).scalar_subquery()
    return case(
        (archived.is_not(None), literal("customer is archived")),
        (and_(exact_stands, exact_granted == false()), literal(f"withdrew {purpose} consent for {channel}")),
        (exact_stands, null()),
        (every_granted == false(), literal(f"withdrew {purpose} consent for every channel")),
        *opted_out,
        (every_granted == true(), null()),
        *default,
        else_=null(),
    )


def refusal(uow: UnitOfWork, customer_id: int | None, channel: str, purpose: str) -> str | None:
    """Why a ``purpose`` message through ``channel`` may not go to the customer, or None."""
    if customer_id is None:
        return None
    check_purpose(purpose)
    chan = uow.crm.notify.registry.get(channel)
    column = refusal_column(channel, chan.address, purpose, uow.crm.config.notify.policy(channel), customer_id)
    return uow.conn.execute(select(column)).scalar()


def refusals(crm: CRM, messages: Sequence[Any]) -> dict[int, str]:
    """Consent as it stands now for messages about to be sent: ``{message id: reason}``
    for those that may not go (one query per channel and purpose, for the dispatcher)."""
    found: dict[int, str] = {}
    outbox = tables.notify_outbox
    groups: dict[tuple[str, str], list[int]] = {}
    for m in messages:
        if m.customer_id is not None and m.channel in crm.notify.registry:
            groups.setdefault((m.channel, m.purpose), []).append(m.id)
    for (channel, purpose), ids in groups.items():
        address = crm.notify.registry.get(channel).address
        column = refusal_column(channel, address, purpose, crm.config.notify.policy(channel), outbox.c.customer_id)
        for start in range(0, len(ids), 1000):
            query = select(outbox.c.id, column.label("refusal")).where(outbox.c.id.in_(ids[start:start + 1000]))
            with crm.unit(readonly=True) as uow:
                found.update({mid: reason for mid, reason in uow.conn.execute(query) if reason})
    return found


# -- unsubscribe tokens and links ---------------------------------------------------------------

def _serializer(secret: str | None) -> itsdangerous.URLSafeSerializer:
    if not secret:
        raise ConfigError("[notify] unsubscribe_secret (or unsubscribe_secret_env) is not set: "
                          "unsubscribe links cannot be signed or checked")
    return itsdangerous.URLSafeSerializer(secret, salt=TOKEN_SALT,
                                          signer_kwargs={"digest_method": hashlib.sha256})


def make_token(secret: str | None, customer_id: int, channel: str = EVERY_CHANNEL,
               purpose: str = "marketing") -> str:
    """A URL-safe token that unsubscribes ``customer_id`` from ``purpose`` on ``channel``."""
    return _serializer(secret).dumps([customer_id, channel, purpose])


def read_token(secret: str | None, token: str) -> tuple[int, str, str]:
    """``(customer_id, channel, purpose)`` of a token; :class:`InvalidToken` if forged or damaged."""
    try:
        customer_id, channel, purpose = _serializer(secret).loads(token.strip())
    except (itsdangerous.BadData, ValueError, TypeError):
        raise InvalidToken("the unsubscribe token is not valid (damaged, or signed with another secret)") from None
    return int(customer_id), str(channel), str(purpose)


def unsubscribe_url(crm: CRM, customer_id: int, channel: str = EVERY_CHANNEL, purpose: str = "marketing") -> str:
    """The configured unsubscribe URL with a fresh token for the customer."""
    settings = crm.config.notify
    return settings.unsubscribe_url.replace("{token}", make_token(settings.secret(), customer_id,
                                                                  channel, purpose))


def unsubscribe_token(crm: CRM, token: str, source: str = "link", at: datetime | None = None,
                      again: bool = True) -> Decision:
    """Process an unsubscribe token: record the withdrawal (idempotent).

    With ``again=False`` (the unsubscribe page: mail providers retry one-click
    requests, people click twice) a withdrawal that already stands for the token's
    channel and purpose is returned as it is, and nothing new is recorded.
    """
    customer_id, channel, purpose = read_token(crm.config.notify.secret(), token)
    with crm.unit() as uow:
        crm.authorize("consent.unsubscribe", customer_id)
        if not again:
            with uow.scoped():  # NotFound for an unknown customer, as record() says
                uow.customers.get(customer_id)
            standing = withdrawal_stands(uow, customer_id, channel, purpose)
            if standing is not None:
                return standing
        return record(uow, customer_id, False, channel, purpose, source=source, at=at)


def withdrawal_stands(uow: UnitOfWork, customer_id: int, channel: str, purpose: str) -> Decision | None:
    """The recorded withdrawal that already decides ``channel`` and ``purpose``, or None.

    The key's own latest decision must be a withdrawal, and for one channel no later
    decision for every channel may override it (rule 1 of the module docstring): after
    "no to mail" then "yes to everything", a new "no to mail" must be recorded.
    """
    standing = {(d.channel, d.purpose): d for d in decisions(uow, customer_id)}
    own = standing.get((channel, purpose))
    if own is None or own.granted:
        return None
    every = standing.get((EVERY_CHANNEL, purpose))
    if channel != EVERY_CHANNEL and every is not None and every.recorded_at > own.recorded_at:
        return None
    return own


def unsubscribe_app(crm: CRM) -> Any:
    """A WSGI application processing unsubscribe tokens (``?token=...``); see
    :func:`crmcore.notify.unsubscribe.wsgi_app` (the same page as ``crm serve``'s
    ``/unsubscribe``).  Mount it under any path::

        from wsgiref.simple_server import make_server
        make_server("127.0.0.1", 8025, unsubscribe_app(crm)).serve_forever()
    """
    from .unsubscribe import wsgi_app  # the page module imports this one

    return wsgi_app(crm)
