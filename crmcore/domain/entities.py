"""The domain entities and their value types.

Entities are frozen attrs classes: hooks receive them and cannot mutate them by
accident.  A change is ``attrs.evolve`` plus a repository call that returns the
new entity.  Field checks that need configuration (phone region, pipelines,
custom fields) live in :mod:`crmcore.domain.validation`.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import attrs

MONEY_SCALE = 10_000
"""Money is stored as a signed 64-bit integer in units of 1/MONEY_SCALE (four decimal places)."""


class CustomerKind(str, enum.Enum):
    """Whether a customer is a person or a company."""
    PERSON = "person"
    COMPANY = "company"


class LifecycleStage(str, enum.Enum):
    """Where a customer is in the lifecycle: lead, prospect, customer or former."""
    LEAD = "lead"
    PROSPECT = "prospect"
    CUSTOMER = "customer"
    FORMER = "former"


class InteractionKind(str, enum.Enum):
    """The kind of an interaction: call, email, meeting, visit, message, note, complaint or feedback."""
    CALL = "call"
    EMAIL = "email"
    MEETING = "meeting"
    VISIT = "visit"
    MESSAGE = "message"
    NOTE = "note"
    COMPLAINT = "complaint"
    FEEDBACK = "feedback"


class Direction(str, enum.Enum):
    """Whether an interaction came in from the customer or went out to them."""
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class StageOutcome(str, enum.Enum):
    """What a pipeline stage means for a deal: still open, won (revenue) or lost."""
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class TaskStatus(str, enum.Enum):
    """Where a follow-up task stands: open, done or cancelled."""
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


class TaskPriority(str, enum.Enum):
    """How urgent a task is: low, normal, high or urgent."""
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class TaskSource(str, enum.Enum):
    """Why a task exists: added by someone, an interaction's follow-up date, or a complaint (SLA)."""
    MANUAL = "manual"
    FOLLOW_UP = "follow-up"
    COMPLAINT = "complaint"


@attrs.frozen
class Stage:
    """A pipeline stage: its order, default win probability (percent) and outcome."""

    name: str
    order: int
    probability: int
    outcome: StageOutcome = StageOutcome.OPEN


@attrs.frozen
class Pipeline:
    """An ordered list of stages, from configuration."""

    name: str
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage | None:
        """The stage called ``name``, or None if this pipeline has no such stage."""
        return next((s for s in self.stages if s.name == name), None)

    def stages_with(self, outcome: StageOutcome) -> list[str]:
        """The stages with the given outcome, in pipeline order."""
        return [s.name for s in self.stages if s.outcome is outcome]


@attrs.frozen
class Customer:
    """A person or company the business sells to."""

    name: str
    id: int | None = None
    kind: CustomerKind = CustomerKind.PERSON
    email: str | None = None
    phone: str | None = None
    country: str | None = None
    region: str | None = None
    city: str | None = None
    industry: str | None = None
    source: str | None = None
    owner: str | None = None
    stage: LifecycleStage = LifecycleStage.LEAD
    birthday: date | None = None
    # Consent: transactional messages always go; marketing needs consent_marketing
    # plus the channel's flag.  Channel flags default on (opt-out), marketing off.
    consent_email: bool = True
    consent_sms: bool = True
    consent_marketing: bool = False
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = attrs.field(factory=dict)
    external_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: When the customer was archived (deleted without ``--purge``); None while it is live.
    archived_at: datetime | None = None


@attrs.frozen
class Contact:
    """A person at a customer."""

    customer_id: int
    name: str
    id: int | None = None
    title: str | None = None
    email: str | None = None
    phone: str | None = None
    is_primary: bool = False
    attributes: dict[str, Any] = attrs.field(factory=dict)
    external_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@attrs.frozen
class Interaction:
    """Something that happened between the business and a customer."""

    customer_id: int
    kind: InteractionKind
    occurred_at: datetime
    id: int | None = None
    contact_id: int | None = None
    direction: Direction = Direction.OUTBOUND
    channel: str | None = None
    subject: str | None = None
    body: str | None = None
    outcome: str | None = None
    satisfaction: int | None = None
    follow_up_due: datetime | None = None
    resolved_at: datetime | None = None
    owner: str | None = None
    attributes: dict[str, Any] = attrs.field(factory=dict)
    external_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@attrs.frozen
class Deal:
    """An opportunity; a deal in a ``won`` stage is revenue."""

    customer_id: int
    title: str
    amount: Decimal
    currency: str
    stage: str
    id: int | None = None
    pipeline: str = "default"
    probability: int | None = None
    expected_close: date | None = None
    closed_at: datetime | None = None
    owner: str | None = None
    lost_reason: str | None = None
    attributes: dict[str, Any] = attrs.field(factory=dict)
    external_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: When the deal was archived (deleted without ``--purge``); None while it is live.
    archived_at: datetime | None = None


@attrs.frozen
class Task:
    """A follow-up task (回访) on a customer: a scheduled revisit or a complaint to handle.

    ``assignee`` is a user's login; ``due`` an aware UTC time (None: no due time).  ``completed_at``
    is set when the task is done or cancelled (by :meth:`crmcore.application.services.TaskService.done`
    and ``cancel``) and cleared when it is opened again.
    """

    customer_id: int
    title: str
    id: int | None = None
    deal_id: int | None = None
    interaction_id: int | None = None
    assignee: str | None = None
    due: datetime | None = None
    status: TaskStatus = TaskStatus.OPEN
    priority: TaskPriority = TaskPriority.NORMAL
    source: TaskSource = TaskSource.MANUAL
    notes: str | None = None
    completed_at: datetime | None = None
    attributes: dict[str, Any] = attrs.field(factory=dict)
    external_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


ENTITY_TYPES: dict[str, type[Customer] | type[Contact] | type[Interaction] | type[Deal] | type[Task]] = {
    "customer": Customer,
    "contact": Contact,
    "interaction": Interaction,
    "deal": Deal,
    "task": Task,
}
