"""Templated messages: render a template for customers and queue the result.

``crm.messages`` is what campaigns, triggers and ``crm notify preview`` share:

* :meth:`MessageEngine.preview` renders without sending;
* :meth:`MessageEngine.enqueue` queues one templated message inside a unit of
  work (triggers call it from event handlers, so a rolled-back use case queues
  nothing);
* :meth:`MessageEngine.enqueue_batch` queues many in a few statements
  (campaigns, segment and birthday triggers).

Context of every template: ``customer`` (its columns, ``attributes`` for
custom fields), ``contact`` (the primary contact, or the first one; None if
there is none), ``deal`` (when given), ``loyalty`` (``balance`` and ``tier``
in the first scheme, ``schemes`` by name), ``unsubscribe_url``, ``as_of``,
``locale``, ``timezone``, plus what the caller adds (``due_at`` for a
complaint, ``tier`` and ``old_tier`` for a tier change, ...).

Consent is checked with :mod:`crmcore.notify.consent` before queueing: a customer
who may not receive the message is skipped (and counted), not queued.  A
message that cannot be rendered for one customer (a variable their data
lacks) or has no address is queued as ``dead`` with the reason, so nothing
else stops and nothing vanishes silently.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import String, func, select

from ..domain.convert import unstructure
from ..domain.errors import ValidationError
from ..domain.text import text_problem
from ..store import tables
from ..store.upsert import ignoring_conflicts
from . import consent
from .outbox import DEFAULT_MAX_ATTEMPTS
from .templates import Rendered, TemplateCatalog, TemplateError

if TYPE_CHECKING:
    from ..app import CRM
    from ..application.uow import UnitOfWork

outbox = tables.notify_outbox
customers = tables.customers
contacts = tables.contacts
accounts = tables.loyalty_accounts
_SUBJECT_TYPE = outbox.c.subject.type
assert isinstance(_SUBJECT_TYPE, String) and _SUBJECT_TYPE.length is not None, "the outbox subject is a String(n)"
SUBJECT_LIMIT: int = _SUBJECT_TYPE.length
IN_CHUNK = 1000


@attrs.frozen
class BatchCounts:
    """What queueing a batch did."""

    enqueued: int = 0
    skipped_consent: int = 0
    duplicates: int = 0
    dead: int = 0

    def __add__(self, other: BatchCounts) -> BatchCounts:
        return BatchCounts(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other))))


class MessageEngine:
    """``crm.messages``: templates, previews and templated enqueueing."""

    def __init__(self, crm: CRM):
        self.crm = crm
        self._catalog: TemplateCatalog | None = None

    # -- templates -----------------------------------------------------------------------------
    def template_dirs(self) -> list[Path]:
        """``[notify] templates_dir`` first, then directories plugins registered."""
        dirs: list[Path] = []
        if self.crm.config.notify.templates_dir:
            dirs.append(Path(self.crm.config.notify.templates_dir))
        self.crm.plugins.call_each("register_templates",
                                   lambda plugin: {"register": lambda path: dirs.append(Path(path))})
        return dirs

    @property
    def catalog(self) -> TemplateCatalog:
        """The template catalog (built on first use, then cached: templates compile once)."""
        if self._catalog is None:
            settings = self.crm.config.notify
            self._catalog = TemplateCatalog(self.template_dirs(), settings.default_locale,
                                            max_chars=settings.render_max_chars, timeout=settings.render_timeout)
        return self._catalog

    def locale_of(self, customer: Mapping[str, Any]) -> str:
        """The customer's locale: the ``locale_field`` custom field, else by
        country (``[notify.locales]``), else ``default_locale``."""
        settings = self.crm.config.notify
        value = (customer.get("attributes") or {}).get(settings.locale_field)
        if isinstance(value, str) and value.strip():
            return value.strip()
        country = customer.get("country")
        return settings.locales.get(country.upper(), settings.default_locale) if country else settings.default_locale

    # -- context ---------------------------------------------------------------------------------
    def contexts(self, uow: UnitOfWork, customer_ids: Sequence[int], as_of: datetime) -> dict[int, dict[str, Any]]:
        """Template contexts of many customers in three queries (customers, contacts, loyalty)."""
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(customer_ids), IN_CHUNK):
            chunk = list(customer_ids[start:start + IN_CHUNK])
            rows = uow.conn.execute(select(customers).where(customers.c.id.in_(chunk)))
            for row in rows:
                found[row.id] = self._base_context(dict(row._mapping), as_of)
            order = (contacts.c.customer_id, contacts.c.is_primary.desc(), contacts.c.id)
            for row in uow.conn.execute(select(contacts).where(contacts.c.customer_id.in_(chunk)).order_by(*order)):
                if row.customer_id in found and found[row.customer_id]["contact"] is None:
                    found[row.customer_id]["contact"] = dict(row._mapping)
            for row in uow.conn.execute(select(accounts).where(accounts.c.customer_id.in_(chunk)).order_by(
                    accounts.c.customer_id, accounts.c.scheme)):
                if row.customer_id in found:
                    found[row.customer_id]["loyalty"]["schemes"][row.scheme] = {
                        "balance": int(row.balance), "tier": row.tier}
        for ctx in found.values():
            self._pick_scheme(ctx["loyalty"])
        return found

    def _base_context(self, customer: dict[str, Any], as_of: datetime) -> dict[str, Any]:
        settings = self.crm.config.notify
        ctx: dict[str, Any] = {"customer": customer, "contact": None, "deal": None,
                               "loyalty": {"balance": 0, "tier": None, "scheme": None, "schemes": {}},
                               "as_of": as_of, "timezone": self.crm.config.timezone,
                               "locale": self.locale_of(customer)}
        if settings.has_secret():
            ctx["unsubscribe_url"] = consent.unsubscribe_url(self.crm, customer["id"])
        else:
            import jinja2  # here: a command that renders no message never imports Jinja2

            ctx["unsubscribe_url"] = jinja2.StrictUndefined(
                hint="unsubscribe_url needs [notify] unsubscribe_secret or unsubscribe_secret_env in crm.toml")
        return ctx

    def _pick_scheme(self, loyalty: dict[str, Any]) -> None:
        """``loyalty.balance``: the scheme holding most of the customer's points
        (ties: registration order), so a birthday or referral scheme with an
        empty account does not hide the points scheme; ``loyalty.tier``: the
        first scheme that gives the customer a tier."""
        names = self.crm.loyalty.registry.names() or sorted(loyalty["schemes"])
        schemes = loyalty["schemes"]
        if not names:
            return
        best = max(names, key=lambda n: (schemes.get(n, {}).get("balance", 0), -names.index(n)))
        loyalty["scheme"] = best
        loyalty["balance"] = schemes.get(best, {}).get("balance", 0)
        loyalty["tier"] = next((schemes[n]["tier"] for n in names if schemes.get(n, {}).get("tier")), None)

    # -- one message -------------------------------------------------------------------------------
    def render(self, uow: UnitOfWork, template: str, customer_id: int, locale: str | None = None,
               deal_id: int | None = None, extra: Mapping[str, Any] | None = None,
               as_of: datetime | None = None) -> Rendered:
        """Render ``template`` for one customer; :class:`TemplateError` names file and line."""
        contexts = self.contexts(uow, [customer_id], as_of or uow.now)
        if customer_id not in contexts:
            uow.customers.get(customer_id)  # raises NotFound
        ctx = contexts[customer_id]
        if deal_id is not None:
            ctx["deal"] = plain(uow.deals.get(deal_id))
        ctx.update(extra or {})
        return self.catalog.render(template, locale or ctx["locale"], ctx)

    def preview(self, template: str, customer_id: int, locale: str | None = None, deal_id: int | None = None,
                as_of: str | date | datetime | None = None) -> Rendered:
        """Render without sending (``crm notify preview``)."""
        moment = self.crm.as_of(as_of)
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("notify.preview", template)
            return self.render(uow, template, customer_id, locale, deal_id, as_of=moment)

    def enqueue(self, uow: UnitOfWork, template: str, customer_id: int, *, key: str,
                channel: str | None = None, purpose: str = "transactional",
                extra: Mapping[str, Any] | None = None, not_before: datetime | None = None) -> BatchCounts:
        """Queue one templated message in ``uow`` (for event handlers).

        ``extra`` adds to the template context; entities in it (a ``deal``, an
        ``interaction``) are passed as plain values, enums as their value.
        """
        values = {k: plain(v) if attrs.has(type(v)) else v for k, v in (extra or {}).items()}
        return self.enqueue_batch(uow, template, [customer_id], key_for=lambda cid: key, channel=channel,
                                  purpose=purpose, extra_for=lambda cid: values, not_before=not_before)

    def send(self, channel: str | None = None, *, customer_id: int | None = None, recipient: str | None = None,
             template: str | None = None, subject: str | None = None, body: str | None = None,
             purpose: str = "transactional", key: str | None = None, locale: str | None = None,
             deal_id: int | None = None) -> tuple[dict[str, Any], bool]:
        """Queue one message, rendered from ``template`` for the customer or given as
        ``subject``/``body`` (``POST /notify/messages``); returns its outbox row and whether it is new.

        The message goes through the outbox as ``crm notify send`` queues it: consent decides
        (a refused message is stored ``suppressed`` with the reason), a customer without an
        address gets a ``dead`` one, and a ``key`` queued before returns that message (False).
        A marketing message to a customer carries the signed ``unsubscribe_url`` (the smtp
        channel's ``List-Unsubscribe``) when ``[notify]`` has a secret.

        The row is read in the writing unit, so a message without a customer (which record
        visibility hides from users who see only some customers) is still returned to its
        sender; keys are the caller's own (the HTTP API prefixes each user's keys).
        """
        channel = channel or self.crm.config.notify.channel
        if channel not in self.crm.notify.registry:
            known = ", ".join(c.name for c in self.crm.notify.registry) or "none"
            raise ValidationError.single("channel", f"no channel {channel!r} (registered: {known})", "message")
        if template is not None and (subject is not None or body is not None):
            raise ValidationError.single("template", "give a template or a subject and body, not both", "message")
        if template is not None and customer_id is None:
            raise ValidationError.single("customer_id", "a template is rendered for a customer: name one", "message")
        # Control characters (NUL, which PostgreSQL cannot store, among them) are refused at the door.
        problems = [(name, problem) for name, value, lines in (("subject", subject, False), ("body", body, True),
                                                                ("to", recipient, False))
                    if isinstance(value, str) and (problem := text_problem(value, multiline=lines))]
        if problems:
            raise ValidationError(problems, "message")
        with self.crm.unit() as uow:
            self.crm.authorize("notify.enqueue", channel)
            customer = None
            if customer_id is not None:
                with uow.scoped():  # NotFound for a customer the acting user cannot see
                    customer = uow.customers.get(customer_id)
            if key is not None:
                found = uow.conn.execute(select(outbox).where(outbox.c.idempotency_key == key)).first()
                if found is not None:
                    return dict(found._mapping), False
            payload: dict[str, Any] = {}
            if template is not None and customer_id is not None:
                rendered = self.render(uow, template, customer_id, locale, deal_id)
                if len(rendered.subject) > SUBJECT_LIMIT:
                    raise ValidationError.single("template", f"the rendered subject is longer than {SUBJECT_LIMIT} "
                                                 "characters", "message")
                subject, body = rendered.subject, rendered.text
                payload = {"template": template, "locale": rendered.locale, "html": rendered.html,
                           "to_name": customer.name if customer else None}
            if purpose == "marketing" and customer_id is not None and self.crm.config.notify.has_secret():
                payload["unsubscribe_url"] = consent.unsubscribe_url(self.crm, customer_id)
            message_id = uow.outbox.enqueue(channel, customer_id=customer_id, recipient=recipient, subject=subject,
                                            body=body, payload=payload, purpose=purpose, key=key)
            return dict(uow.conn.execute(select(outbox).where(outbox.c.id == message_id)).one()._mapping), True

    # -- consent and the daily run -------------------------------------------------------------
    def set_consent(self, customer_id: int, granted: bool, channel: str = consent.EVERY_CHANNEL,
                    purpose: str = "marketing", source: str = "cli",
                    at: str | date | datetime | None = None) -> consent.Decision:
        """Record a consent decision (``crm customer unsubscribe`` / ``resubscribe``)."""
        if channel != consent.EVERY_CHANNEL:
            self.crm.notify.registry.get(channel)  # an unknown channel name is a typo, not a decision
        with self.crm.unit() as uow:
            self.crm.authorize("consent.unsubscribe" if not granted else "consent.subscribe", customer_id)
            return consent.record(uow, customer_id, granted, channel, purpose, source,
                                  at=self.crm.as_of(at) if at is not None else None)

    def consents(self, customer_id: int) -> list[consent.Decision]:
        """A customer's recorded consent decisions."""
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("customer.read", customer_id)
            return consent.decisions(uow, customer_id)

    def consent_history(self, customer_id: int) -> list[consent.Decision]:
        """Every consent decision ever recorded for a customer, oldest first."""
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("customer.read", customer_id)
            uow.customers.get(customer_id)  # NotFound for an unknown customer, not an empty history
            return consent.history(uow, customer_id)

    def templates(self) -> list[dict[str, Any]]:
        """Each message template with its locales (``crm notify templates``)."""
        self.crm.authorize("notify.templates", None)
        catalog = self.catalog
        return [{"template": kind, "locales": catalog.locales(kind)} for kind in catalog.kinds()]

    def unsubscribe_url(self, customer_id: int, channel: str = consent.EVERY_CHANNEL,
                        purpose: str = "marketing") -> str:
        """A signed unsubscribe link for the customer (``crm notify unsubscribe-url``).

        Asked as ``notify.unsubscribe-url``: the token withdraws consent for whoever holds it.
        """
        self.crm.authorize("notify.unsubscribe-url", customer_id)
        with self.crm.unit(readonly=True) as uow:
            uow.customers.get(customer_id)  # NotFound for a customer the acting user cannot see
        return consent.unsubscribe_url(self.crm, customer_id, channel, purpose)

    def unsubscribe(self, token: str, source: str = "link") -> consent.Decision:
        """Process an unsubscribe token from a link (``crm notify unsubscribe TOKEN``)."""
        return consent.unsubscribe_token(self.crm, token, source)

    def run_scheduled(self, as_of: str | date | datetime | None = None) -> int:
        """The daily run: fires ``on_scheduled`` (birthdays, ...); returns messages queued."""
        moment = self.crm.as_of(as_of)
        with self.crm.unit() as uow:
            self.crm.authorize("notify.run_scheduled", None)
            before = uow.conn.execute(select(func.count()).select_from(outbox)).scalar_one()
            uow.fire("on_scheduled", as_of=moment)
            return uow.conn.execute(select(func.count()).select_from(outbox)).scalar_one() - before

    # -- many messages -------------------------------------------------------------------------------
    def enqueue_batch(self, uow: UnitOfWork, template: str, customer_ids: Sequence[int], *,
                      key_for: Callable[[int], str], channel: str | None = None, purpose: str = "marketing",
                      extra_for: Callable[[int], Mapping[str, Any]] | None = None,
                      not_before: datetime | None = None, check_consent: bool = True) -> BatchCounts:
        """Render and queue ``template`` for each customer in a few statements.

        Skips customers consent refuses and keys already queued; a customer the
        template cannot be rendered for gets a ``dead`` message with the reason.
        """
        channel = channel or self.crm.config.notify.channel
        chan = self.crm.notify.registry.get(channel)
        self.catalog.check(template)  # a syntax error stops here, before anything is queued
        ids = list(dict.fromkeys(customer_ids))
        keys = {cid: key_for(cid) for cid in ids}
        taken = existing_keys(uow, list(keys.values()))
        fresh = [cid for cid in ids if keys[cid] not in taken]
        refused = self._refused(uow, fresh, channel, chan.address, purpose) if check_consent else set()
        wanted = [cid for cid in fresh if cid not in refused]
        contexts = self.contexts(uow, wanted, uow.now)
        rows, dead = [], 0
        for cid in wanted:
            ctx = contexts.get(cid)
            if ctx is None:  # deleted meanwhile
                continue
            ctx.update(extra_for(cid) if extra_for else {})
            row = self._row(uow, template, ctx, channel, chan.address, purpose, keys[cid], not_before)
            dead += row["status"] == "dead"
            rows.append(row)
        if rows:  # a key queued meanwhile by a concurrent transaction is skipped, not an IntegrityError
            uow.conn.execute(ignoring_conflicts(uow.conn, outbox, outbox.c.idempotency_key), rows)
        return BatchCounts(len(rows) - dead, len(refused), len(ids) - len(fresh), dead)

    def _refused(self, uow: UnitOfWork, ids: list[int], channel: str, address: str | None,
                 purpose: str) -> set[int]:
        policy = self.crm.config.notify.policy(channel)
        refused: set[int] = set()
        for start in range(0, len(ids), IN_CHUNK):
            column = consent.refusal_column(channel, address, purpose, policy, customers.c.id)
            query = select(customers.c.id).where(customers.c.id.in_(ids[start:start + IN_CHUNK]), column.is_not(None))
            refused.update(uow.conn.execute(query).scalars())
        return refused

    def _row(self, uow: UnitOfWork, template: str, ctx: dict[str, Any], channel: str, address: str | None,
             purpose: str, key: str, not_before: datetime | None) -> dict[str, Any]:
        customer = ctx["customer"]
        row = {"idempotency_key": key, "channel": channel, "customer_id": customer["id"],
               "recipient": customer.get(address) if address else None, "purpose": purpose, "subject": None,
               "body": None, "payload": {"template": template}, "status": "pending", "attempts": 0,
               "max_attempts": DEFAULT_MAX_ATTEMPTS, "next_attempt_at": not_before or uow.now,
               "claimed_at": None, "last_error": None, "provider_id": None, "created_at": uow.now, "sent_at": None}
        try:
            rendered = self.catalog.render(template, ctx["locale"], ctx)
        except TemplateError as exc:
            return row | {"status": "dead", "last_error": str(exc)}
        row["payload"] = {"template": template, "locale": rendered.locale, "html": rendered.html,
                          "to_name": customer.get("name")}
        if purpose == "marketing" and self.crm.config.notify.has_secret():
            row["payload"]["unsubscribe_url"] = ctx["unsubscribe_url"]
        row.update(subject=rendered.subject, body=rendered.text)
        if len(rendered.subject) > SUBJECT_LIMIT:
            return row | {"status": "dead", "subject": rendered.subject[:SUBJECT_LIMIT],
                          "last_error": f"rendered subject is longer than {SUBJECT_LIMIT} characters"}
        if address and not row["recipient"]:
            return row | {"status": "dead", "last_error": f"customer {customer['id']} has no {address}"}
        return row


def existing_keys(uow: UnitOfWork, keys: list[str]) -> set[str]:
    """Which of ``keys`` are already in the outbox."""
    found: set[str] = set()
    for start in range(0, len(keys), IN_CHUNK):
        found.update(uow.conn.execute(select(outbox.c.idempotency_key).where(
            outbox.c.idempotency_key.in_(keys[start:start + IN_CHUNK]))).scalars())
    return found


def plain(entity: Any) -> dict[str, Any]:
    """An entity as a template sees it: a dict of plain values (enums as their value)."""
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in unstructure(entity).items()}
