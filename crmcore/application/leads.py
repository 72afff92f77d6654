"""Inbound lead capture (``crm.leads``): a form post or a webhook delivery becomes a customer,
an inbound interaction and consent decisions, in one unit of work.

The capture finds the customer by normalised email (else phone) among all
customers, whoever the acting user is, so the same person writing twice is one
customer with two interactions; otherwise it adds a lead.  Every write goes
through the services (``crm.customers``, ``crm.interactions``) and the consent
records (:mod:`crmcore.application.consents`), so validation, ``authorize``,
events and the audit trail are those of every other interface.  It acts as the
built-in ``system`` actor unless the form names ``act_as`` (a user who must be
allowed to create customers and interactions, record consent and see the
customers a capture may match).

What a stranger sent never overwrites what the CRM already holds: on a known
customer, only empty fields are filled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import select

from ..domain.errors import ValidationError
from ..domain.validation import normalize_email, normalize_phone
from ..store import tables
from . import consents
from .uow import SYSTEM_ACTOR

if TYPE_CHECKING:
    from ..app import CRM
    from .uow import UnitOfWork

customers = tables.customers


@attrs.frozen
class Captured:
    """What a capture did.

    :ivar customer_id: the customer found or created.
    :ivar interaction_id: the inbound interaction added.
    :ivar created: whether the customer is a new lead.
    :ivar consents: the decisions recorded, as ``purpose/channel`` (``marketing/*``).
    """

    customer_id: int
    interaction_id: int
    created: bool
    consents: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The capture as the API answers it."""
        return {"customer_id": self.customer_id, "interaction_id": self.interaction_id,
                "created": self.created, "consents": list(self.consents)}


class LeadService:
    """``crm.leads``: capture inbound leads from forms and webhooks."""

    def __init__(self, crm: "CRM"):
        self.crm = crm

    def capture(self, source: str, customer: Mapping[str, Any], interaction: Mapping[str, Any],
                consent: Sequence[tuple[str, str]] = (), *, kind: str = "message", channel: str | None = None,
                owner: str | None = None, act_as: str | None = None) -> Captured:
        """Find or create the customer, add an inbound interaction and record consent grants.

        :param source: where it came from (``form:contact``): the new customer's ``source`` and
            each consent decision's source.
        :param customer: customer fields (``email``, ``name``, ``attributes`` ...); needs an email or
            a phone.  A new lead without a name is named by its email (else phone).
        :param interaction: ``subject``, ``body``, ``outcome`` of the interaction.
        :param consent: ``(purpose, channel)`` pairs granted (``("marketing", "*")``).
        :param owner: the login new leads are assigned to.
        :param act_as: the acting user (None: ``system``); checked as ``crm.acting`` checks.
        """
        if act_as is not None and act_as != SYSTEM_ACTOR:
            self.crm.users.check_can_act(act_as)
        with self.crm.acting_as(act_as or SYSTEM_ACTOR), self.crm.unit() as uow:
            fields = dict(customer)
            self._normalise(fields)
            # Two first posts of one new address at once: the second waits here for the first's
            # commit, then finds its lead instead of adding a second one.
            self.crm.duplicates.hold(uow, email=fields.get("email"), phone=fields.get("phone"))
            found = self._find(uow, fields)
            if found is None:
                created = True
                fields.setdefault("name", fields.get("email") or fields.get("phone"))
                fields.setdefault("source", source)
                if owner is not None:
                    fields.setdefault("owner", owner)
                # The door check's keys (an address in other capitals, the phone of a customer found
                # by neither look-up): the lead is that customer, not a duplicate of it.
                candidate = self.crm.validator.customer(self.crm.customers.build(fields))
                matches = self.crm.duplicates.matches(uow, candidate)
                if matches and matches[0].customer_id is not None:
                    created, found = False, uow.customers.get(matches[0].customer_id)
            if found is None:
                # Only a customer the capturing user cannot see has these keys (no id to attach the
                # lead to, and a lead is never lost): added, as before the door matched every customer.
                stored = self.crm.customers.add(on_duplicate="add" if matches else None, **fields)
            else:
                created = False
                stored = self._fill_blanks(found, fields)
            assert stored.id is not None, "a stored customer has an id"
            added = self.crm.interactions.add(
                customer_id=stored.id, kind=kind, direction="inbound", channel=channel, occurred_at=uow.now,
                **{k: v for k, v in interaction.items() if v not in (None, "")})
            recorded = []
            for purpose, on in consent:
                self.crm.authorize("consent.subscribe", stored.id)
                consents.write_decision(uow, stored.id, True, on, purpose, source, uow.now)
                recorded.append(f"{purpose}/{on}")
            assert added.id is not None, "a stored interaction has an id"
            return Captured(stored.id, added.id, created, tuple(recorded))

    def hold(self, uow: "UnitOfWork", customer: Mapping[str, Any]) -> None:
        """Take the door locks a capture of ``customer`` takes (see ``crm.duplicates.hold``), ahead
        of it: for a caller whose unit reads something before the capture (a webhook's idempotency
        key), since on MariaDB the locks must come before the unit's first read.  Invalid values
        are not held (the capture says what is wrong with them)."""
        fields = dict(customer)
        try:
            self._normalise(fields)
        except ValidationError:
            return
        self.crm.duplicates.hold(uow, email=fields.get("email"), phone=fields.get("phone"))

    def _normalise(self, fields: dict[str, Any]) -> None:
        """Normalise the email address and phone number in ``fields``; one of them is needed."""
        if fields.get("email"):
            try:
                fields["email"] = normalize_email(str(fields["email"]))
            except ValueError as exc:
                raise ValidationError.single("email", str(exc), "customer") from None
        if fields.get("phone"):
            try:
                fields["phone"] = normalize_phone(str(fields["phone"]), self.crm.config.phone_region)
            except ValueError as exc:
                raise ValidationError.single("phone", str(exc), "customer") from None
        if not fields.get("email") and not fields.get("phone"):
            raise ValidationError.single("email", "an email address or a phone number is needed", "customer")

    def _find(self, uow: "UnitOfWork", fields: Mapping[str, Any]) -> Any:
        """The live customer with this email (else phone), among all customers (the unit is not
        scoped: the acting user's visibility does not hide a match); ``fields`` normalised."""
        if fields.get("email"):
            condition = customers.c.email == fields["email"]
        else:
            condition = customers.c.phone == fields["phone"]
        # The oldest live match: the same person is always the same customer (an indexed look-up).
        row = uow.conn.execute(select(customers.c.id).where(condition, customers.c.archived_at.is_(None))
                               .order_by(customers.c.id).limit(1)).first()
        return None if row is None else uow.customers.get(row.id)

    def _fill_blanks(self, found: Any, fields: Mapping[str, Any]) -> Any:
        """Fill the known customer's empty fields from ``fields``; nothing stored is overwritten."""
        changes: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "attributes":
                added = {k: v for k, v in value.items() if k not in found.attributes}
                if added:
                    changes["attributes"] = {**found.attributes, **added}
            elif value not in (None, "") and getattr(found, name, None) in (None, ""):
                changes[name] = value
        return self.crm.customers.update(found.id, **changes) if changes else found
