"""Entity use cases: add, update, delete, get, list, and moving deals.

Each call runs in one unit of work (or joins the caller's, when called from an
event handler): authorize -> structure -> normalise -> ``validate_*`` hooks ->
write -> ``on_*`` events.  Any error rolls the whole unit back.
"""

from __future__ import annotations

import builtins
import functools
import re
from datetime import datetime, timedelta
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import attrs
import phonenumbers
from sqlalchemy import String, Table, bindparam, func, or_, select, update

from ..domain.convert import DERIVED_COLUMNS, structure, unstructure
from ..domain.entities import Contact, Customer, Deal, Interaction, LifecycleStage, Stage, StageOutcome
from ..domain.errors import DuplicateCustomer, NotFound, HasHistory, RecordArchived, StaleVersion, ValidationError
from ..domain.versions import version_of
from ..domain.validation import normalize_phone
from ..store.bulk import insert_returning_ids
from ..store.pointread import Fallback
from ..store.filters import search_condition
from ..store.repositories import Archived, E, Repository
from ..store import direct, tables
from ..store.sealed import Sealed
from ..store.tables import ENTITY_TABLES as _TABLES
from . import consents
from .users import resolve_owner, resolve_owners

if TYPE_CHECKING:
    from ..app import CRM
    from .uow import UnitOfWork

#: Rows fetched per round trip when a listing streams (:meth:`EntityService.iter`).
STREAM_BATCH = 1000


class EntityService(Generic[E]):
    """Use cases for one entity type; ``crm.customers``, ``crm.deals``, ..."""

    kind: str
    entity: type[E]
    repo_name: str

    def __init__(self, crm: "CRM"):
        self.crm = crm
        self._read_action = f"{self.kind}.read"  # (asked of authorize by every get and find)

    #: A repository of this entity made to convert rows only (:meth:`_make_reader`): the point
    #: reads of :meth:`get` and :meth:`find` read through each unit with it.
    _reader: Repository[E] | None = None

    def _make_reader(self, uow: "UnitOfWork") -> Repository[E]:
        """:attr:`_reader`, made once: a repository of the class ``uow`` makes (:meth:`repo`)."""
        self._reader = reader = type(self.repo(uow))()
        return reader

    def repo(self, uow: "UnitOfWork") -> Repository[E]:
        """This entity's repository in ``uow`` (``uow.customers``, ...)."""
        repository: Repository[E] = getattr(uow, self.repo_name)  # named by repo_name, the subclass's entity
        return repository

    # -- reading ---------------------------------------------------------
    def get(self, id: int) -> E:
        """The entity with ``id`` (:class:`NotFound` otherwise)."""
        crm = self.crm
        point = crm.point_unit()  # below SQLAlchemy when it can (crmcore.application.point_reads)
        if point is not None:
            try:
                with point as uow:
                    crm.authorize(self._read_action, id)
                    # Read by the service's own repository (no repository made per read), as the
                    # unit's would read it (Repository.get).
                    found = (self._reader or self._make_reader(uow)).point_read(uow, "id", id)
                    if found is None:
                        raise NotFound(self.kind, id)
                    return found
            except Fallback:
                pass  # read again through an ordinary unit, which reports any error as it always did
        with crm.unit(readonly=True, plain=True) as uow:
            crm.authorize(self._read_action, id)
            return self.repo(uow).get(id)

    def find(self, **criteria: Any) -> E | None:
        """The first entity whose columns equal ``criteria`` (e.g. ``external_id=``) among those the
        acting user may see; asks ``authorize("KIND.read", None)`` as :meth:`get` asks for an id."""
        crm = self.crm
        point = crm.point_unit()
        if point is not None:
            try:
                with point as uow:
                    crm.authorize(self._read_action, None)
                    reader = self._reader or self._make_reader(uow)
                    key = reader.point_key(criteria)
                    if key is not None:  # (Repository.find's point read, without its repository)
                        return reader.point_read(uow, key[0], key[1], limit=1)
                    return self.repo(uow).find(**criteria)
            except Fallback:
                pass
        with crm.unit(readonly=True, plain=True) as uow:
            crm.authorize(self._read_action, None)
            return self.repo(uow).find(**criteria)

    def list(self, filters: Mapping[str, Any] | None = None, order_by: str = "id",
             limit: int | None = None, offset: int = 0, *, archived: Archived = "exclude") -> builtins.list[E]:
        """Entities matching ``filters`` (``attributes.NAME`` for custom fields).

        ``archived``: ``"exclude"`` (the default) leaves out archived customers and deals and the
        deals, contacts and interactions of archived customers; ``"include"`` lists every record,
        ``"only"`` just those.
        """
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize(f"{self.kind}.list", None)
            return self.repo(uow).list(self.typed_filters(filters), order_by, limit, offset, archived=archived)

    def iter(self, filters: Mapping[str, Any] | None = None, order_by: str = "id",
             limit: int | None = None, offset: int = 0, *, archived: Archived = "exclude") -> Iterator[E]:
        """Like :meth:`list`, streamed from the database in batches: memory stays flat
        however many rows match (``crm customer list --all``)."""
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize(f"{self.kind}.list", None)
            streaming = uow.conn.execution_options(stream_results=True, yield_per=STREAM_BATCH)
            yield from type(self.repo(uow))(streaming).iter(self.typed_filters(filters), order_by, limit, offset,
                                                            archived=archived)

    def count(self, filters: Mapping[str, Any] | None = None, *, archived: Archived = "exclude") -> int:
        """How many entities match ``filters`` (``archived`` as in :meth:`list`)."""
        with self.crm.unit(readonly=True) as uow:
            return self.repo(uow).count(self.typed_filters(filters), archived=archived)

    def search(self, text: str, limit: int | None = None, *, archived: Archived = "exclude") -> builtins.list[E]:
        """Entities whose name, email or phone contain ``text`` (any script).

        A phone number as people write it (``132-9141-7776``, ``+86 132 9141``,
        ``(0755) 1234``) also matches the stored E.164 form: see :func:`phone_search_terms`.
        ``archived`` as in :meth:`list`.
        """
        columns = tuple(c for c in ("name", "title", "email", "phone", "subject") if c in self.repo_table().c)
        phones = phone_search_terms(text, self.crm.config.phone_region) if "phone" in columns else []
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize(f"{self.kind}.list", None)
            return self.repo(uow).search(text, columns, limit, also={"phone": phones}, archived=archived)

    def page(self, filters: Mapping[str, Any] | None = None, sort: str = "id", limit: int = 50,
             after: tuple[Any, int] | None = None, search: str | None = None, *,
             archived: Archived = "exclude") -> builtins.list[E]:
        """One keyset page of :meth:`list` (``after``: the last row's sort value and id), optionally
        narrowed by ``search`` (as :meth:`search` matches).  See :meth:`Repository.page`."""
        matching = None
        if search:
            columns = tuple(c for c in ("name", "title", "email", "phone", "subject") if c in self.repo_table().c)
            phones = phone_search_terms(search, self.crm.config.phone_region) if "phone" in columns else []
            matching = search_condition(self.repo_table(), search, columns, {"phone": phones})
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize(f"{self.kind}.list", None)
            return self.repo(uow).page(self.typed_filters(filters), sort, limit, after, matching, archived=archived)

    def repo_table(self) -> Table:
        """The table of this entity."""
        return _TABLES[self.kind]

    def typed_filters(self, filters: Mapping[str, Any] | None) -> dict[str, Any]:
        """Text values for declared custom fields converted to the field's JSON type."""
        typed = dict(filters or {})
        declared = self.crm.custom_fields.get(self.kind, {})
        for key, value in typed.items():
            name = key.removeprefix("attributes.").partition("__")[0]
            field = declared.get(name) if key.startswith("attributes.") else None
            if field is not None and isinstance(value, str) and field.type in ("int", "bool"):
                try:
                    typed[key] = field.check(value)
                except ValueError as exc:
                    raise ValidationError.single(key, str(exc), self.kind) from None
        return typed

    # -- writing ---------------------------------------------------------
    def add(self, entity: E | None = None, /, **fields: Any) -> E:
        """Validate and store a new entity given as an object or as fields."""
        with self.crm.unit() as uow:
            candidate = entity if entity is not None else self.build(fields)
            # Ask first: a refused user learns nothing from validation messages.
            self.crm.authorize(f"{self.kind}.create", candidate)
            if getattr(candidate, "archived_at", None) is not None:
                raise ValidationError.single("archived_at", f"a new {self.kind} is not archived "
                                             "(add it, then delete() archives it)", self.kind)
            candidate = self.prepare(uow, candidate, None)
            stored = self.repo(uow).insert(candidate, uow.now)
            uow.audit.created(self.kind, stored)
            self.after_insert(uow, stored)
            return stored

    def target(self, uow: "UnitOfWork", id: int) -> E:
        """The stored entity a change names, if the acting user may see it (else NotFound)."""
        with uow.scoped():
            return self.repo(uow).get(id)

    def update(self, id: int, **changes: Any) -> E:
        """Change fields of a stored entity; events see old and new."""
        with self.crm.unit() as uow:
            return self.change(uow, self.target(uow, id), changes)

    def update_if(self, id: int, version: str | None, changes: Mapping[str, Any]) -> E:
        """:meth:`update`, only if the record is still at ``version`` (:func:`crmcore.domain.versions.version_of`
        of what the caller read; None: unconditionally).  Another version: :class:`StaleVersion`, nothing
        written.  The row is locked from the check to the write."""
        with self.crm.unit() as uow:
            with uow.scoped():
                previous = self.repo(uow).get_for_update(id)
            if version is not None and version_of(previous) != version:
                self.crm.authorize(f"{self.kind}.update", previous)  # a refused user learns nothing of versions
                raise StaleVersion(self.kind, id, version, version_of(previous))
            return self.change(uow, previous, changes)

    def change(self, uow: "UnitOfWork", previous: E, changes: Mapping[str, Any]) -> E:
        """:meth:`update` of ``previous`` (the stored entity :meth:`target` loaded) in ``uow``."""
        id = previous.id
        assert id is not None, "a stored entity has an id"
        fields = unstructure(previous) | dict(changes)
        candidate = self.build(fields)
        self.crm.authorize(f"{self.kind}.update", candidate)
        if getattr(previous, "archived_at", None) is not None:
            raise RecordArchived(self.kind, id, f"is archived: restore it first (crm {self.kind} restore {id})")
        if "archived_at" in changes:  # archiving has its own use case, audit action and event
            raise ValidationError.single("archived_at", f"use delete() to archive and restore() to "
                                         f"un-archive a {self.kind}", self.kind)
        candidate = self.prepare(uow, candidate, previous)
        stored = self.repo(uow).update(candidate, uow.now)
        uow.audit.updated(self.kind, stored, previous)
        self.after_update(uow, stored, previous)
        return stored

    def delete(self, id: int, purge: bool = False) -> E:
        """Delete a contact or interaction for real; see :meth:`ArchivingService.delete` for
        customers and deals (which archive unless ``purge``)."""
        with self.crm.unit() as uow:
            previous = self.target(uow, id)
            self.crm.authorize(f"{self.kind}.delete", previous)
            return self.remove(uow, previous)

    def remove(self, uow: "UnitOfWork", previous: E, action: str | None = None) -> E:
        """Remove ``previous``'s row (its dependants cascade), unless :meth:`history` finds anything
        that must outlive it (:class:`HasHistory`; the database's foreign keys refuse it too)."""
        found = self.history(uow, previous)
        if found:
            raise HasHistory(self.kind, previous.id, found)
        assert previous.id is not None, "a stored entity has an id"
        self.repo(uow).delete(previous.id)
        uow.audit.deleted(self.kind, previous, action)
        uow.fire(f"on_{self.kind}_deleted", **{self.kind: previous})
        return previous

    def add_many(self, rows: Iterable[Mapping[str, Any] | E]) -> int:
        """Bulk path: validate and insert many entities, firing one batch event.

        Either every row is valid and stored, or a :class:`ValidationError`
        names the bad row (0-based index) and nothing is stored.  Fires
        ``on_<kind>s_imported`` once (skipped when nobody listens) instead of
        the per-entity events.
        """
        with self.crm.unit() as uow:
            self.crm.authorize(f"{self.kind}.import", None)
            entities: builtins.list[E] = []
            for index, row in enumerate(rows):
                try:
                    # mypy cannot narrow ``Mapping | E`` by ``isinstance(row, self.entity)``
                    # (a class held in a variable): what is not an entity is a mapping.
                    entity = row if isinstance(row, self.entity) else self.build(cast(Mapping[str, Any], row))
                    entities.append(self.prepare(uow, entity, None, check_references=False))
                except ValidationError as exc:
                    raise ValidationError([(f"row {index}: {f}", m) for f, m in exc.issues], self.kind) from None
            self.check_references_bulk(uow, entities)
            self.check_external_ids_bulk(uow, entities)
            self.check_batch(uow, entities)
            entities = resolve_owners(uow, entities, self.kind) if self.kind in OWNED else entities
            stored = self.insert_batch(uow, entities)
            uow.audit.batch(f"{self.kind}.import", self.kind, [e.id for e in stored])
            uow.fire(f"on_{self.kind}s_imported", **{f"{self.kind}s": stored})
            return len(stored)

    def check_batch(self, uow: "UnitOfWork", entities: builtins.list[E]) -> None:
        """A bulk add's checks of the whole validated batch (set-based); none here (customers: the door)."""

    def check_external_ids_bulk(self, uow: "UnitOfWork", entities: builtins.list[E]) -> None:
        """Duplicate external ids (in the batch or already stored) name the row, not an IntegrityError."""
        first: dict[str, int] = {}
        for index, entity in enumerate(entities):
            key = getattr(entity, "external_id", None)
            if key is None:
                continue
            if key in first:
                raise ValidationError.single(f"row {index}: external_id",
                                             f"{key!r} repeats row {first[key]}", self.kind)
            first[key] = index
        table, keys = _TABLES[self.kind], list(first)
        for start in range(0, len(keys), 5000):
            taken = uow.conn.execute(select(table.c.external_id).where(
                table.c.external_id.in_(keys[start:start + 5000]))).scalars().first()
            if taken is not None:
                raise ValidationError.single(f"row {first[taken]}: external_id",
                                             f"{taken!r} is already used by another {self.kind}", self.kind)

    def check_references_bulk(self, uow: "UnitOfWork", entities: builtins.list[E]) -> None:
        """One query for all referenced customers (no per-row round trip)."""
        # Customers themselves have no customer_id.
        wanted: set[int] = {cid for e in entities if (cid := getattr(e, "customer_id", None)) is not None}
        if not wanted:
            return
        customers = _TABLES["customer"]
        found: set[int] = set()
        archived: set[int] = set()
        ids = sorted(wanted)
        for start in range(0, len(ids), 10_000):
            chunk = ids[start:start + 10_000]
            with uow.scoped():  # the acting user's visible customers only
                for cid, archived_at in uow.conn.execute(select(customers.c.id, customers.c.archived_at)
                                                         .where(customers.c.id.in_(chunk))):
                    found.add(cid)
                    if archived_at is not None:
                        archived.add(cid)
        for bad, problem in ((wanted - found, "does not exist"), (archived, "is archived: restore it first")):
            if bad:
                index = next(i for i, e in enumerate(entities) if getattr(e, "customer_id", None) in bad)
                raise ValidationError.single(f"row {index}: customer_id",
                                             f"customer {getattr(entities[index], 'customer_id')} {problem}",
                                             self.kind)

    def insert_batch(self, uow: "UnitOfWork", entities: builtins.list[E]) -> builtins.list[E]:
        """Insert a validated batch; returns the entities with their ids."""
        return self.repo(uow).insert_many(entities, uow.now)

    # -- steps subclasses refine ----------------------------------------
    def build(self, fields: Mapping[str, Any]) -> E:
        """The entity of ``fields`` (structured, not yet validated)."""
        return structure(dict(fields), self.entity, self.kind)

    def prepare(self, uow: "UnitOfWork", entity: E, previous: E | None, check_references: bool = True) -> E:
        """Normalise and validate ``entity`` (core rules, then the ``validate_*`` hooks)."""
        if not isinstance(entity, self.entity):
            raise TypeError(f"expected a {self.entity.__name__}, got {entity!r}")
        entity = getattr(self.crm.validator, self.kind)(entity)
        self.check_lengths(entity)
        if check_references:
            self.check_references(uow, entity)
            if self.kind in OWNED and not _same_owner(entity, previous):
                entity = resolve_owner(uow, entity, self.kind)
        issues = []
        for result in self.crm.plugins.call(f"validate_{self.kind}", uow=uow, previous=previous,
                                            **{self.kind: entity}):
            issues.extend(_issues(result))
        if issues:
            raise ValidationError(issues, self.kind)
        return entity

    def check_lengths(self, entity: E) -> None:
        """Text longer than its column is a validation error, not a database error."""
        issues = [(name, f"at most {limit} characters, got {len(value)}")
                  for name, limit in _text_limits(self.kind)
                  if isinstance(value := getattr(entity, name), str) and len(value) > limit]
        if issues:
            raise ValidationError(issues, self.kind)

    def check_references(self, uow: "UnitOfWork", entity: E) -> None:
        """The referenced customer exists and is not archived, and the external id is free (clear
        errors, not IntegrityErrors)."""
        customer_id = getattr(entity, "customer_id", None)
        with uow.scoped():  # a customer the acting user cannot see is no customer to attach to
            # Only whether it is there and archived: one column, not a whole customer to build.
            found = uow.read_first(_CUSTOMER_STATE, {"value": customer_id}) if customer_id is not None else None
        if customer_id is not None and found is None:
            raise ValidationError.single("customer_id", f"customer {customer_id} does not exist", self.kind)
        if found is not None and found[1][0] is not None:
            raise ValidationError.single("customer_id", f"customer {customer_id} is archived: restore it first "
                                         f"(crm customer restore {customer_id})", self.kind)
        # A clear error instead of the database's IntegrityError (which still guards races).
        external_id = getattr(entity, "external_id", None)
        if external_id is not None:
            holder = self.repo(uow).find(external_id=external_id)
            if holder is not None and holder.id != entity.id:
                raise ValidationError.single(
                    "external_id", f"{external_id!r} is already used by {self.kind} {holder.id}", self.kind)

    def history(self, uow: "UnitOfWork", entity: E) -> builtins.list[str]:
        """What history ``entity`` has that must outlive it (``["1 won deal"]``); empty: none."""
        return []

    def after_insert(self, uow: "UnitOfWork", stored: E) -> None:
        """Fire ``on_<kind>_created``."""
        uow.fire(f"on_{self.kind}_created", **{self.kind: stored})

    def after_update(self, uow: "UnitOfWork", stored: E, previous: E) -> None:
        """Fire ``on_<kind>_updated``."""
        uow.fire(f"on_{self.kind}_updated", previous=previous, **{self.kind: stored})


# Digits with the separators people type between them, perhaps after a "+".
_PHONE_LIKE = re.compile(r"\+?[\d\s().\-/]*\d[\d\s().\-/]*")


def phone_search_terms(text: str, region: str | None) -> builtins.list[str]:
    """What to look for in the stored (E.164) phone column when ``text`` looks like a phone number.

    * the whole number normalised (:func:`~crmcore.domain.validation.normalize_phone`,
      ``region`` for national numbers): ``132-9141-7776`` -> ``+8613291417776``;
    * its digit run, with the ``+`` when typed (a part of a number): ``+86 132`` -> ``+86132``,
      ``9141 7776`` -> ``91417776``;
    * with a ``region``, the digit run without the region's trunk prefix, which E.164 drops:
      ``0755-1234`` -> ``7551234`` in China.

    Empty when ``text`` is not digits and separators (a name or an email searches as typed).
    """
    text = text.strip()
    if not _PHONE_LIKE.fullmatch(text):
        return []
    digits = phonenumbers.normalize_digits_only(text)  # also full-width digits
    terms = {("+" if text.startswith("+") else "") + digits}
    try:
        terms.add(normalize_phone(text, region))
    except ValueError:
        pass  # a part of a number: its digits are enough
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region) if region else None
    trunk = metadata.national_prefix if metadata is not None else None
    if trunk and not text.startswith("+") and digits.startswith(trunk) and len(digits) > len(trunk):
        terms.add(digits[len(trunk):])
    return sorted(terms)


def _same_owner(entity: Any, previous: Any) -> bool:
    """Whether an update keeps the stored owner: a stored owner is a user's login (a foreign key to
    ``users.login``), which resolves to itself, so it needs no look-up (a single move's share)."""
    return previous is not None and entity.owner is not None and entity.owner == previous.owner


@functools.cache
def _text_limits(kind: str) -> tuple[tuple[str, int], ...]:
    limits = ((c.name, c.type.limit if isinstance(c.type, Sealed) else getattr(c.type, "length", None))
              for c in _TABLES[kind].c if c.name not in DERIVED_COLUMNS and isinstance(c.type, (Sealed, String)))
    return tuple((name, limit) for name, limit in limits if limit)


def _counted(conn: Any, column: Any, value: int, one: str, many: str) -> builtins.list[str]:
    """``["3 outbox messages"]`` for the rows whose ``column`` equals ``value``; empty for none."""
    count: int = conn.execute(select(func.count()).select_from(column.table).where(column == value)).scalar_one()
    return [f"{count} {one if count == 1 else many}"] if count else []


def _issues(result: Any) -> list[tuple[str, str]]:
    if not result:
        return []
    if isinstance(result, (str, tuple)):
        result = [result]
    return [item if isinstance(item, tuple) else ("*", str(item)) for item in result]


#: Customers or deals: the entities that archive (they have ``archived_at``).
A = TypeVar("A", Customer, Deal)


class ArchivingService(EntityService[A]):
    """Customers and deals: :meth:`delete` archives (hidden from lists, kept for reports, the
    ledger and the audit trail), ``delete(id, purge=True)`` removes, :meth:`restore` un-archives."""

    def delete(self, id: int, purge: bool = False) -> A:
        """Archive the record (``archived_at`` = now; action ``KIND.delete``), or with ``purge``
        remove it for real (action ``KIND.purge``).

        Archiving changes nothing else: a customer's deals, contacts and interactions are left as they
        are and hidden from lists with it.  It fires ``on_KIND_deleted`` (the record leaves the live
        set, which is what a plugin reacting to deletes cares about); the record passed has
        ``archived_at`` set.  An archived record is refused (:class:`RecordArchived`).

        A purge is refused with :class:`HasHistory` when the record has history that must outlive
        it (won deals, loyalty ledger entries, outbox messages, consent decisions): such a record
        can only be archived.  Otherwise the row goes, with its contacts, interactions, deals and
        stage history (the database's cascade), audited as ``KIND.purge``.
        """
        with self.crm.unit() as uow:
            previous = self.target(uow, id)
            if purge:
                self.crm.authorize(f"{self.kind}.purge", previous)
                return self.remove(uow, previous, f"{self.kind}.purge")
            self.crm.authorize(f"{self.kind}.delete", previous)
            if previous.archived_at is not None:
                raise RecordArchived(self.kind, id, f"is already archived (since {previous.archived_at.isoformat()})")
            stored = self.repo(uow).update(attrs.evolve(previous, archived_at=uow.now), uow.now)
            uow.audit.updated(self.kind, stored, previous, f"{self.kind}.archive")
            uow.fire(f"on_{self.kind}_deleted", **{self.kind: stored})
            return stored

    def restore(self, id: int) -> A:
        """Un-archive an archived record (action ``KIND.restore``, audited); fires ``on_KIND_updated``
        (with the archived record as ``previous``): it is the same record, live again."""
        with self.crm.unit() as uow:
            previous = self.target(uow, id)
            self.crm.authorize(f"{self.kind}.restore", previous)
            if previous.archived_at is None:
                raise RecordArchived(self.kind, id, "is not archived: nothing to restore")
            stored = self.repo(uow).update(attrs.evolve(previous, archived_at=None), uow.now)
            uow.audit.updated(self.kind, stored, previous, f"{self.kind}.restore")
            uow.fire(f"on_{self.kind}_updated", previous=previous, **{self.kind: stored})
            return stored


class CustomerService(ArchivingService[Customer]):
    """``crm.customers``: add, update, delete, get, list, search and import customers."""
    kind, entity, repo_name = "customer", Customer, "customers"

    def add(self, entity: Customer | None = None, /, *, on_duplicate: str | None = None,
            **fields: Any) -> Customer:
        """Validate and store a new customer, checked at the door for duplicates.

        A customer sharing an exact key (``[duplicates] exact``: email whatever its case, phone,
        ...) with a stored one is refused with :class:`DuplicateCustomer` ("looks like customer 12
        (same email)") when ``on_duplicate`` (default ``[duplicates] on_add``) is ``"refuse"``;
        ``"add"`` adds it anyway.
        """
        rule = self.crm.config.duplicates.on_add if on_duplicate is None else on_duplicate
        if rule not in ("refuse", "add"):
            raise ValidationError.single("on_duplicate", f"must be refuse or add, got {rule!r}", self.kind)
        with self.crm.unit() as uow:
            uow.memo[_DOOR] = rule
            try:
                return super().add(entity, **fields)
            finally:
                uow.memo.pop(_DOOR, None)

    def add_many(self, rows: Iterable[Mapping[str, Any] | Customer], *, on_duplicate: str | None = None) -> int:
        """Bulk add (see :meth:`Service.add_many`), checked at the door as :meth:`add` is, set-based:
        one query per exact key and 5,000 rows.  With ``on_duplicate`` (default ``[duplicates]
        on_add``) ``"refuse"``, a row sharing an exact key with a stored customer or with an earlier
        row of the batch is refused with :class:`DuplicateCustomer` naming the row (0-based), and
        nothing is stored; ``"add"`` adds every row."""
        rule = self.crm.config.duplicates.on_add if on_duplicate is None else on_duplicate
        if rule not in ("refuse", "add"):
            raise ValidationError.single("on_duplicate", f"must be refuse or add, got {rule!r}", self.kind)
        with self.crm.unit() as uow:
            uow.memo[_DOOR_MANY] = rule
            try:
                return super().add_many(rows)
            finally:
                uow.memo.pop(_DOOR_MANY, None)

    def check_batch(self, uow: "UnitOfWork", entities: builtins.list[Customer]) -> None:
        """The door check of a bulk add (:meth:`add_many`): the first row that duplicates a stored
        customer or an earlier row is refused."""
        if uow.memo.get(_DOOR_MANY, "refuse") == "refuse":
            refused = self.crm.duplicates.first_duplicate(uow, entities)
            if refused is not None:
                raise refused

    def prepare(self, uow: "UnitOfWork", entity: Customer, previous: Customer | None,
                check_references: bool = True) -> Customer:
        """Normalise and validate; a new customer through :meth:`add` is then checked at the door."""
        entity = super().prepare(uow, entity, previous, check_references)
        if previous is None and uow.memo.get(_DOOR) == "refuse":
            matches = self.crm.duplicates.matches(uow, entity)
            if matches:
                raise DuplicateCustomer(matches)
        return entity

    # The consent_marketing flag is the "*" marketing decision (crmcore.application.consents):
    # setting it records one, in the same unit of work, before the events fire.
    def after_insert(self, uow: "UnitOfWork", stored: Customer) -> None:
        """Record the marketing decision of a customer added with ``consent_marketing``, then fire the event."""
        assert stored.id is not None, "a stored customer has an id"
        consents.flag_set(uow, stored.id, stored.consent_marketing, None)
        super().after_insert(uow, stored)

    def after_update(self, uow: "UnitOfWork", stored: Customer, previous: Customer) -> None:
        """Record a decision when ``consent_marketing`` changed, then fire the event."""
        assert stored.id is not None, "a stored customer has an id"
        consents.flag_set(uow, stored.id, stored.consent_marketing, previous.consent_marketing)
        super().after_update(uow, stored, previous)

    def insert_batch(self, uow: "UnitOfWork", entities: builtins.list[Customer]) -> builtins.list[Customer]:
        """Bulk customers: one executemany, then the decisions of those added with ``consent_marketing``."""
        stored = super().insert_batch(uow, entities)
        consents.flags_set(uow, [c.id for c in stored if c.consent_marketing and c.id is not None])
        return stored

    def history(self, uow: "UnitOfWork", customer: Customer) -> builtins.list[str]:
        """Won deals, loyalty ledger entries, outbox messages and consent decisions."""
        assert customer.id is not None, "a stored customer has an id"
        won = sum(1 for deal in uow.deals.list({"customer_id": customer.id}, archived="include")
                  if (stage := self.crm.stage_of(deal)) is not None and stage.outcome is StageOutcome.WON)
        return ([f"{won} won deal{'s' if won != 1 else ''}"] if won else []) \
            + _counted(uow.conn, tables.loyalty_ledger.c.customer_id, customer.id,
                       "loyalty ledger entry", "loyalty ledger entries") \
            + _counted(uow.conn, tables.notify_outbox.c.customer_id, customer.id, "outbox message", "outbox messages") \
            + _counted(uow.conn, tables.consent_history.c.customer_id, customer.id,
                       "consent decision", "consent decisions")  # every decision, not only the standing ones


class ContactService(EntityService[Contact]):
    """``crm.contacts``: the people at a customer."""
    kind, entity, repo_name = "contact", Contact, "contacts"


class InteractionService(EntityService[Interaction]):
    """``crm.interactions``: calls, emails, meetings, complaints and other touch points."""
    kind, entity, repo_name = "interaction", Interaction, "interactions"

    def check_references(self, uow: "UnitOfWork", entity: Interaction) -> None:
        """The customer exists, and the contact (if any) is one of that customer's contacts."""
        super().check_references(uow, entity)
        if entity.contact_id is not None:
            contact = uow.contacts.find(id=entity.contact_id)
            if contact is None or contact.customer_id != entity.customer_id:
                raise ValidationError.single(
                    "contact_id", f"contact {entity.contact_id} is not a contact of customer {entity.customer_id}",
                    self.kind)

    def after_insert(self, uow: "UnitOfWork", stored: Interaction) -> None:
        """Fire ``on_interaction_created``, then the tasks it asks for (a follow-up date, a complaint:
        :meth:`crmcore.application.tasks.TaskService.from_interaction`)."""
        super().after_insert(uow, stored)
        self.crm.tasks.from_interaction(uow, stored, None)

    def after_update(self, uow: "UnitOfWork", stored: Interaction, previous: Interaction) -> None:
        """Fire ``on_interaction_updated``, then move, make or close the tasks the change asks for."""
        super().after_update(uow, stored, previous)
        self.crm.tasks.from_interaction(uow, stored, previous)


class DealService(ArchivingService[Deal]):
    """Deals, plus :meth:`move` between pipeline stages."""

    kind, entity, repo_name = "deal", Deal, "deals"

    def build(self, fields: Mapping[str, Any]) -> Deal:
        """A deal from user input; the currency defaults to the configured one."""
        fields = dict(fields)
        fields.setdefault("currency", self.crm.config.default_currency)
        return super().build(fields)

    def move(self, deal_id: int, stage: str, lost_reason: str | None = None) -> Deal:
        """Move a deal to ``stage``; closing stages stamp ``closed_at``."""
        changes: dict[str, Any] = {"stage": stage}
        if lost_reason is not None:
            changes["lost_reason"] = lost_reason
        with self.crm.unit() as uow:
            previous = self.target(uow, deal_id)
            self.crm.authorize("deal.move", previous)
            return self.change(uow, previous, changes)  # the deal just loaded: not read a second time

    def move_many(self, moves: Iterable[Mapping[str, Any]]) -> int:
        """Bulk stage moves: many deals, each at its own time, in a few statements.

        Each move has ``deal_id``, ``stage`` and optionally ``at`` (an aware
        datetime, default now) and ``lost_reason``; one deal may move several
        times (in the order given).  The resulting rows are those of the same
        :meth:`move` calls made at those times: the deals' stage, probability,
        ``closed_at``, lost reason and ``updated_at``, one stage-history row per
        move, buyers of won deals promoted, loyalty earned (keys by
        transition, as a single move writes them).  A move to the deal's
        current stage changes nothing.  Either every move is valid and stored,
        or a :class:`ValidationError` names the bad one (0-based) and nothing
        is.  A bulk path: no per-deal events (``on_deal_updated``,
        ``on_deal_stage_changed``, ``on_customer_updated``), as ``add_many`` fires
        none; the loyalty plugin's tier and referral reactions are caught up by
        its jobs (``crm loyalty run``).  Returns the number of moves recorded.
        """
        moves = builtins.list(moves)
        with self.crm.unit() as uow:
            plan = _MovePlan(self, uow)
            plan.load([m["deal_id"] for m in moves if isinstance(m, Mapping) and isinstance(m.get("deal_id"), int)])
            for index, move in enumerate(moves):
                try:
                    plan.add(move)
                except ValidationError as exc:
                    raise ValidationError([(f"move {index}: {f}", m) for f, m in exc.issues], self.kind) from None
            plan.write()
            return len(plan.transitions)

    def moved(self, deal: Deal, previous: Deal, now: Any) -> Deal:
        """``deal`` (``previous`` with a new stage) as a move at ``now`` leaves it: ``closed_at`` set
        by a closing stage (cleared by an open one), probability from the stage unless given, the
        lost reason kept only in a lost stage.  Shared by :meth:`move` and :meth:`move_many`."""
        stage = self.crm.stage_of(attrs.evolve(deal, probability=None))
        closing = stage is not None and stage.outcome is not StageOutcome.OPEN
        closed_at = (deal.closed_at if deal.closed_at != previous.closed_at else None) or now
        return attrs.evolve(
            deal,
            probability=None if deal.probability == previous.probability else deal.probability,
            closed_at=closed_at if closing else None,
            lost_reason=deal.lost_reason if stage is not None and stage.outcome is StageOutcome.LOST else None,
        )

    def prepare(self, uow: "UnitOfWork", deal: Deal, previous: Deal | None, check_references: bool = True) -> Deal:
        """Normalise and validate a deal; set or clear ``closed_at`` by its stage's outcome."""
        if previous is not None and deal.stage != previous.stage:
            deal = self.moved(deal, previous, uow.now)
        elif previous is None and deal.closed_at is None:
            stage = self.crm.stage_of(deal)
            if stage is not None and stage.outcome is not StageOutcome.OPEN:
                deal = attrs.evolve(deal, closed_at=uow.now)
        return super().prepare(uow, deal, previous, check_references)

    def history(self, uow: "UnitOfWork", deal: Deal) -> list[str]:
        """A won deal is revenue in past reports; loyalty entries earned or reversed on it."""
        assert deal.id is not None, "a stored deal has an id"
        stage = self.crm.stage_of(deal)
        return (["won"] if stage is not None and stage.outcome is StageOutcome.WON else []) \
            + _counted(uow.conn, tables.loyalty_ledger.c.deal_id, deal.id,
                       "loyalty ledger entry", "loyalty ledger entries")

    def after_insert(self, uow: "UnitOfWork", stored: Deal) -> None:
        """Fire ``on_deal_created``, then record the first stage (loyalty and ``on_deal_stage_changed`` react)."""
        super().after_insert(uow, stored)
        self._stage_changed(uow, stored, None)

    def insert_batch(self, uow: "UnitOfWork", deals: list[Deal]) -> list[Deal]:
        """Bulk deals: one executemany, then :meth:`after_bulk_insert`."""
        stored = uow.deals.insert_many(deals, uow.now)
        self.after_bulk_insert(uow, stored)
        return stored

    def after_bulk_insert(self, uow: "UnitOfWork", stored: list[Deal]) -> None:
        """What follows every bulk insert of deals (``add_many`` and imports): their first
        stage-history rows in one executemany, the buyers of won deals become customers, and
        loyalty schemes earn for the won ones."""
        uow.deals.record_initial_stages(stored, uow.now, uow.actor)
        self._promote_buyers_bulk(uow, stored)
        self.crm.loyalty.deals_imported(uow, stored)

    def after_update(self, uow: "UnitOfWork", stored: Deal, previous: Deal) -> None:
        """Fire ``on_deal_updated``; a stage change is recorded and reaches loyalty and ``on_deal_stage_changed``."""
        super().after_update(uow, stored, previous)
        if stored.stage != previous.stage:
            self._stage_changed(uow, stored, self.crm.stage_of(previous))

    def _stage_changed(self, uow: "UnitOfWork", deal: Deal, old: Stage | None) -> None:
        new = self.crm.stage_of(deal)
        assert deal.id is not None, "a stored deal has an id"
        transition = uow.deals.record_stage_change(deal.id, old.name if old else None, deal.stage,
                                                   uow.now, uow.actor)
        if new is not None and new.outcome is StageOutcome.WON:
            self._promote_buyer(uow, deal.customer_id)
        # The core's loyalty engine first, so handlers see the points just earned.
        self.crm.loyalty.deal_stage_changed(uow, deal, old, new, transition)
        uow.fire("on_deal_stage_changed", deal=deal, old=old, new=new, transition_id=transition)

    # -- a won deal makes a customer ---------------------------------------
    # A business rule of the core, not a strategy: the lifecycle stage is stored on the
    # customer, and the moment a lead or prospect buys is a deal entering a won stage.
    # A segmenter only reads; "former" is a person's decision and stays.
    def _promote_buyer(self, uow: "UnitOfWork", customer_id: int) -> None:
        """Make the buyer of a won deal a customer (from lead or prospect); fires ``on_customer_updated``."""
        if not self.crm.config.customer_on_won_deal:
            return
        if not self.crm.plugins.has_impls("on_customer_updated"):
            self._promote_quietly(uow, customer_id)
            return
        previous = uow.customers.get(customer_id)
        if previous.stage not in PROMOTED_STAGES:
            return
        customer = uow.customers.update(attrs.evolve(previous, stage=LifecycleStage.CUSTOMER), uow.now)
        uow.audit.updated("customer", customer, previous)
        uow.fire("on_customer_updated", customer=customer, previous=previous)

    def _promote_quietly(self, uow: "UnitOfWork", customer_id: int) -> None:
        """:meth:`_promote_buyer` when no plugin listens for ``on_customer_updated``: no entity to
        build, only the stage read and one conditional UPDATE of stage and ``updated_at`` (what the
        full update changes), audited with the same change record."""
        old = direct.run(uow.conn, _BUYER_STAGE, {"b_customer": customer_id}).scalar()
        if old is None or old not in _PROMOTED_VALUES:
            return
        direct.run(uow.conn, _PROMOTE, {"b_customer": customer_id, "b_stage": LifecycleStage.CUSTOMER.value,
                                        "b_now": uow.now})
        uow.audit.record("customer.update", "customer", customer_id, customer_id=customer_id,
                         changes={"stage": [old, LifecycleStage.CUSTOMER.value]})

    def _promote_buyers_bulk(self, uow: "UnitOfWork", deals: list[Deal]) -> None:
        """The bulk path: the buyers of the batch's won deals become customers, in one UPDATE per
        chunk and without per-customer events (like the rest of a bulk add)."""
        if not self.crm.config.customer_on_won_deal:
            return
        buyers = sorted({d.customer_id for d in deals
                         if (stage := self.crm.stage_of(d)) is not None and stage.outcome is StageOutcome.WON})
        customers = _TABLES["customer"]
        for start in range(0, len(buyers), 10_000):
            uow.conn.execute(update(customers).where(
                customers.c.id.in_(buyers[start:start + 10_000]),
                customers.c.stage.in_([s.value for s in PROMOTED_STAGES])).values(
                stage=LifecycleStage.CUSTOMER.value, updated_at=uow.now))
        uow.audit.batch("customer.promote", "customer", buyers)


class _MovePlan:
    """The moves of one :meth:`DealService.move_many` call: checked one by one in Python (no
    query per move), then written in a few set-based statements."""

    def __init__(self, service: DealService, uow: "UnitOfWork"):
        self.service, self.uow = service, uow
        self.current: dict[int, Deal] = {}  # each deal as the moves so far leave it
        self.transitions: list[tuple[Deal, Deal, Any]] = []  # (previous, moved, at)
        self.archived_customers: set[int] = set()  # customers of the loaded deals that are archived

    def add(self, move: Mapping[str, Any]) -> None:
        """Check one move and plan it (:class:`ValidationError` if it is not possible)."""
        service, uow = self.service, self.uow
        unknown = set(move) - {"deal_id", "stage", "at", "lost_reason"}
        if unknown or "deal_id" not in move or "stage" not in move:
            raise ValidationError.single("move", "needs deal_id and stage (and optionally at, lost_reason); "
                                         f"got {sorted(move)}", "deal")
        previous = self._deal(move["deal_id"])
        if previous.archived_at is not None:
            raise ValidationError.single("deal_id", f"deal {previous.id} is archived: restore it first "
                                         f"(crm deal restore {previous.id})", "deal")
        if previous.customer_id in self.archived_customers:  # as a single move's check_references says
            raise ValidationError.single("customer_id", f"customer {previous.customer_id} is archived: restore it "
                                         f"first (crm customer restore {previous.customer_id})", "deal")
        at = move.get("at") or uow.now
        if not (isinstance(at, datetime) and at.utcoffset() == timedelta(0)):  # UTC already: as is
            at = structure({"occurred_at": at}, _MoveTime, "deal").occurred_at
        service.crm.authorize("deal.move", previous)
        stage_name, lost_reason = move["stage"], move.get("lost_reason")
        for name, value in (("stage", stage_name), ("lost_reason", lost_reason)):
            if value is not None and not isinstance(value, str):  # the converter's rule for text
                raise ValidationError.single(name, f"must be text, got {type(value).__name__}", "deal")
        if stage_name == previous.stage:
            return
        pipeline = service.crm.config.pipelines.get(previous.pipeline)
        stage = pipeline.stage(stage_name) if pipeline is not None else None
        if stage is None or lost_reason is not None or service.crm.plugins.has_impls("validate_deal"):
            # The update's own path: the core's rules and messages, the validate_deal hooks.
            candidate = attrs.evolve(previous, stage=stage_name, updated_at=at,
                                     lost_reason=previous.lost_reason if lost_reason is None else lost_reason)
            moved = EntityService.prepare(service, uow, service.moved(candidate, previous, at), previous,
                                          check_references=False)
        else:
            # A stage of the deal's own pipeline and nothing else changing: what that path
            # concludes, in one evolve (it costs ~0.5 ms a move; the demo makes 70,000).
            moved = attrs.evolve(previous, stage=stage_name, probability=stage.probability, updated_at=at,
                                 closed_at=None if stage.outcome is StageOutcome.OPEN else at,
                                 lost_reason=previous.lost_reason if stage.outcome is StageOutcome.LOST else None)
        self.current[moved.id or 0] = moved
        self.transitions.append((previous, moved, at))

    def load(self, deal_ids: builtins.list[int]) -> None:
        """Read the deals the moves name, a chunk of ids per query (not one query per move)."""
        wanted = sorted(set(deal_ids))
        for start in range(0, len(wanted), 5000):
            with self.uow.scoped():  # a deal the acting user cannot see "does not exist"
                rows = self.uow.conn.execute(select(tables.deals).where(
                    tables.deals.c.id.in_(wanted[start:start + 5000]))).all()
            for row in rows:
                deal = self.uow.deals.from_row(row._mapping)
                self.current[row.id] = deal
        customers = sorted({d.customer_id for d in self.current.values()})
        for start in range(0, len(customers), 5000):
            self.archived_customers.update(self.uow.conn.execute(select(tables.customers.c.id).where(
                tables.customers.c.id.in_(customers[start:start + 5000]),
                tables.customers.c.archived_at.is_not(None))).scalars())

    def _deal(self, deal_id: Any) -> Deal:
        if isinstance(deal_id, bool) or not isinstance(deal_id, int):
            raise ValidationError.single("deal_id", f"must be a whole number, got {deal_id!r}", "deal")
        found = self.current.get(deal_id)
        if found is None:
            raise ValidationError.single("deal_id", f"deal {deal_id} does not exist", "deal")
        return found

    def write(self) -> None:
        """The deals' final state (one executemany), a history row per move (one executemany),
        buyers promoted, the core's loyalty engine."""
        if not self.transitions:
            return
        uow, service = self.uow, self.service
        deals = tables.deals
        uow.conn.execute(update(deals).where(deals.c.id == bindparam("deal_id")).values(
            stage=bindparam("stage"), probability=bindparam("probability"), closed_at=bindparam("closed_at"),
            lost_reason=bindparam("lost_reason"), updated_at=bindparam("updated_at")), [
            {"deal_id": d.id, "stage": d.stage, "probability": d.probability, "closed_at": d.closed_at,
             "lost_reason": d.lost_reason, "updated_at": d.updated_at} for d in self.current.values()])
        ids = insert_returning_ids(uow.conn, tables.deal_stage_history, [
            {"deal_id": new.id, "from_stage": old.stage, "to_stage": new.stage, "changed_at": at,
             "actor": uow.actor} for old, new, at in self.transitions])
        stages = [(old, new, service.crm.stage_of(old), service.crm.stage_of(new), tid, at)
                  for (old, new, at), tid in zip(self.transitions, ids)]
        uow.audit.batch("deal.move", "deal", [new.id for _, new, _ in self.transitions],
                        stages=[new.stage for _, new, _ in self.transitions])
        service._promote_buyers_bulk(uow, [new for _, new, _, stage, _, _ in stages
                                           if stage is not None and stage.outcome is StageOutcome.WON])
        service.crm.loyalty.deals_moved(uow, [(new, old_stage, new_stage, tid, at)
                                              for _, new, old_stage, new_stage, tid, at in stages])


@attrs.frozen
class _MoveTime:
    """The time of a bulk move, structured by the one converter (aware UTC, naive taken as UTC)."""

    occurred_at: datetime


#: The memo key of the door check's rule while :meth:`CustomerService.add` runs.
_DOOR = "customers.add.on_duplicate"
#: The same for :meth:`CustomerService.add_many` (checked for the whole batch, not per row).
_DOOR_MANY = "customers.add_many.on_duplicate"

OWNED = ("customer", "deal")
"""The entities whose ``owner`` is a user (interactions keep a free-text owner)."""

PROMOTED_STAGES = (LifecycleStage.LEAD, LifecycleStage.PROSPECT)
"""The lifecycle stages a won deal turns into ``customer`` (``former`` stays former)."""
_PROMOTED_VALUES = frozenset(s.value for s in PROMOTED_STAGES)
# Built once (every write of a customer's record checks it): the customer's archived_at by id.
_CUSTOMER_STATE = select(_TABLES["customer"].c.archived_at).where(_TABLES["customer"].c.id == bindparam("value"))
# Built once (every won deal runs them): the buyer's stage, and its promotion if it is still one
# of PROMOTED_STAGES (the condition repeated, so the UPDATE is right even if the row changed).
_BUYER_STAGE = select(_TABLES["customer"].c.stage).where(_TABLES["customer"].c.id == bindparam("b_customer"))
# (The stages as ORs of plain binds, not IN: an IN of values is expanded at every execution.)
_PROMOTE = update(_TABLES["customer"]).where(
    _TABLES["customer"].c.id == bindparam("b_customer"),
    or_(*(_TABLES["customer"].c.stage == s.value for s in PROMOTED_STAGES))).values(
    stage=bindparam("b_stage"), updated_at=bindparam("b_now"))
