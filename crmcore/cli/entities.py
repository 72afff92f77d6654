"""``crm customer|contact|interaction|deal``: add, show, list, update, delete (and restore).

Options are generated from the entity's attrs fields, so a new core field
shows up on the command line without more code; ``--set NAME=VALUE`` sets a
custom field.  Customers and deals archive on ``delete`` (``--purge --yes``
removes them) and come back with ``restore``; contacts and interactions are
deleted for real.
"""

from __future__ import annotations

import enum
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import attrs
import click

from ..domain.convert import unstructure
from ..domain.entities import Contact, Customer, Deal, Interaction
from ..domain.errors import NotFound, ValidationError
from ..store.filters import parse_expression
from ..store.repositories import Archived
from ..segments.reference import SegmentRef
from .params import COUNT, ID, SEGMENT, as_id, one_more
from .context import Session, pass_session, read_only

#: A click command callback (decorators hand it back with options added).
F = TypeVar("F", bound=Callable[..., Any])

SKIP = {"id", "created_at", "updated_at", "attributes", "archived_at"}
#: The kinds whose delete archives (``crm KIND restore`` un-archives; ``--purge --yes`` removes).
ARCHIVING = ("customer", "deal")
# Required by the entity but filled in by the use case when absent.
DEFAULTED = {"occurred_at", "currency"}
LIST_COLUMNS = {
    "customer": ["id", "name", "email", "phone", "region", "stage", "owner"],
    "contact": ["id", "customer_id", "name", "title", "email", "phone", "is_primary"],
    "interaction": ["id", "customer_id", "kind", "direction", "occurred_at", "subject", "satisfaction"],
    "deal": ["id", "customer_id", "customer_name", "title", "amount", "currency", "stage", "probability",
             "closed_at"],
    "task": ["id", "customer_id", "title", "assignee", "due", "status", "priority", "source"],
}


def _field_options(entity: type, for_update: bool) -> Callable[[F], F]:
    """click options for every settable field of ``entity``."""
    def decorate(func: F) -> F:
        for field in reversed(attrs.fields(entity)):
            if field.name in SKIP:
                continue
            flag = "--" + field.name.replace("_", "-")
            required = field.default is attrs.NOTHING and not for_update and field.name not in DEFAULTED
            if field.type in (bool, "bool"):
                func = click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None,
                                    help=f"{field.name} (true/false).")(func)
            else:
                metavar = "REF" if field.name == "customer_id" else None
                help_text = "customer id, external id or email" if field.name == "customer_id" else None
                if field.name == "customer_id":
                    flag = "--customer"
                func = click.option(flag, field.name, required=required, metavar=metavar, help=help_text)(func)
        func = click.option("--set", "custom", multiple=True, metavar="NAME=VALUE",
                            help="Set a custom field (repeatable).")(func)
        return func
    return decorate


def _values(session: Session, given: dict[str, Any]) -> dict[str, Any]:
    custom = given.pop("custom", ())
    values = {k: v for k, v in given.items() if v is not None}
    if "customer_id" in values:
        values["customer_id"] = resolve_customer(session, values["customer_id"])
    if custom:
        attributes = {}
        for item in custom:
            name, eq, value = item.partition("=")
            if not eq or not name:
                raise ValidationError.single("--set", f"{item!r} is not NAME=VALUE")
            attributes[name.strip()] = value
        values["attributes"] = attributes
    return values


def resolve_customer(session: Session, ref: str | int) -> int:
    """A customer id from an id, an external id or an email address."""
    crm = session.crm
    text = str(ref).strip()
    found = crm.customers.find(external_id=text)
    if found is None and "@" in text:  # archived ones too: what is done with them decides (a clear error)
        # The exact address first: with encryption at rest only it is found (a blind index look-up).
        found = next(iter(crm.customers.list({"email": text.lower()}, limit=1, archived="include")), None) or \
            next(iter(crm.customers.list({"email__contains": text}, limit=1, archived="include")), None)
    customer_id = as_id(text)
    if found is None and customer_id is not None:
        found = crm.customers.find(id=customer_id)
    if found is None:
        raise NotFound("customer", text)
    assert found.id is not None, "a stored customer has an id"
    return found.id


def _record(entity: Any) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in unstructure(entity).items()}


def segment_filter_option(kind: str) -> Callable[[F], F]:
    """``--segment [STRATEGY:]SEGMENT`` on customer commands (nothing on the others)."""
    def decorate(func: F) -> F:
        if kind != "customer":
            return func
        return click.option("--segment", "segment", multiple=True, type=SEGMENT, metavar="[STRATEGY:]SEGMENT",
                            help="Only customers in SEGMENT of the latest run of its strategy "
                                 "(repeat: all must hold).")(func)
    return decorate


def door_option(kind: str) -> Callable[[F], F]:
    """``--on-duplicate refuse|add`` on ``customer add`` (the door check; nothing on the others)."""
    def decorate(func: F) -> F:
        if kind != "customer":
            return func
        return click.option("--on-duplicate", "on_duplicate", type=click.Choice(["refuse", "add"]),
                            help="A customer with another's email, phone or other exact key: refuse it "
                                 "(the default: [duplicates] on_add) or add it anyway.")(func)
    return decorate


def segment_filters(session: Session, refs: tuple[SegmentRef, ...]) -> dict[str, str]:
    """``(rfm:At Risk,)`` -> ``{"segment.rfm": "At Risk"}`` (see crmcore.store.filters); an unknown or
    ambiguous segment is an error listing the known ones."""
    filters: dict[str, str] = {}
    for ref in refs:
        found = session.crm.segments.resolve(ref)
        key = f"segment.{found.strategy}"
        if filters.get(key, found.segment) != found.segment:  # one segment per customer and run
            raise ValidationError.single("--segment", f"{found.strategy}:{filters[key]} and {found} "
                                         "cannot both hold (a customer is in one segment of a run)")
        filters[key] = found.segment
    return filters


def make_group(kind: str, entity: type, service: Callable[[Any], Any]) -> click.Group:
    """The command group for one entity kind."""
    verbs = "add, show, list, update, delete (archive), restore" if kind in ARCHIVING else \
        "add, show, list, update, delete"
    group = click.Group(kind, help=f"{kind.capitalize()}s: {verbs}.")

    @group.command("add")
    @_field_options(entity, for_update=False)
    @door_option(kind)
    @pass_session
    def add(session: Session, /, **given: Any) -> None:
        door = {"on_duplicate": on_duplicate} if (on_duplicate := given.pop("on_duplicate", None)) else {}
        values = _values(session, given)
        if entity is Interaction:
            values.setdefault("occurred_at", session.crm.as_of(session.as_of_text))
        created = service(session.crm).add(**values, **door)
        _show(session, kind, created, f"{kind} {created.id} added")

    @read_only
    @group.command("show")
    @click.argument("id", type=ID)
    @pass_session
    def show(session: Session, id: int) -> None:
        found = service(session.crm).get(id)
        archived = getattr(found, "archived_at", None)
        _show(session, kind, found, None if archived is None else
              f"{kind} {id} is archived (since {archived.isoformat()}); crm {kind} restore {id} brings it back")

    @read_only
    @group.command("list")
    @click.option("--where", "where", multiple=True, metavar="EXPR",
                  help="Filter: FIELD=VALUE, !=, >=, <=, >, <, ~ (contains); attributes.NAME for custom fields.")
    @click.option("--sort", default="id", help="Sort by FIELD (-FIELD for descending).")
    @click.option("--limit", type=COUNT, default=100, show_default=True)
    @click.option("--offset", type=COUNT, default=0)
    @click.option("--all", "all_rows", is_flag=True, help="Every matching row, streamed (instead of --limit).")
    @archived_options(kind)
    @segment_filter_option(kind)
    @pass_session
    def list_(session: Session, where: tuple[str, ...], sort: str, limit: int, offset: int, all_rows: bool,
              only_archived: bool = False, include_archived: bool = False,
              segment: tuple[SegmentRef, ...] = ()) -> None:
        filters = dict(parse_expression(w) for w in where) | segment_filters(session, segment)
        archived = archived_choice(only_archived, include_archived)
        columns = None if session.as_json else LIST_COLUMNS[kind] + (["archived_at"] if archived != "exclude" else [])
        found = service(session.crm)
        named = with_customer_names if kind == "deal" else _same
        if all_rows:
            session.emit(named(session, (_record(r) for r in found.iter(filters, order_by=sort, offset=offset,
                                                                          archived=archived))),
                         columns=columns)
            return
        rows = found.list(filters, order_by=sort, limit=limit, offset=offset, archived=archived)
        session.emit(list(named(session, [_record(r) for r in rows])), columns=columns)
        if len(rows) == limit:
            total = found.count(filters, archived=archived)
            if total > offset + len(rows):
                session.showing(len(rows), total)

    list_.name = "list"

    @group.command("update")
    @click.argument("id", type=ID)
    @_field_options(entity, for_update=True)
    @pass_session
    def update(session: Session, /, id: int, **given: Any) -> None:
        values = _values(session, given)
        if "attributes" in values:
            current = service(session.crm).get(id)
            values["attributes"] = {**current.attributes, **values["attributes"]}
        if not values:
            raise ValidationError.single(kind, "nothing to update: give at least one option")
        updated = service(session.crm).update(id, **values)
        _show(session, kind, updated, f"{kind} {id} updated")

    if kind in ARCHIVING:
        add_archive_commands(group, kind, service)
        return group

    @group.command("delete")
    @click.argument("id", type=ID)
    @click.option("--yes", "-y", is_flag=True, help="Delete without asking (required when stdin is not a terminal).")
    @pass_session
    def delete(session: Session, id: int, yes: bool) -> None:
        """Delete ID for real (asks first)."""
        if not yes:
            confirm_delete(kind, id)
        removed = service(session.crm).delete(id)
        session.emit_object(_record(removed), f"{kind} {removed.id} deleted")

    return group


def _same(session: Session, records: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    return records


def add_archive_commands(group: click.Group, kind: str, service: Callable[[Any], Any]) -> None:
    """``delete`` (archive; ``--purge --yes`` removes) and ``restore`` for customers and deals."""

    @group.command("delete")
    @click.argument("id", type=ID)
    @click.option("--purge", is_flag=True,
                  help=f"Remove the {kind} for real (needs the {kind}.purge permission and --yes; "
                       "refused when it has history).")
    @click.option("--yes", "-y", is_flag=True, help="Confirm --purge (which cannot be undone).")
    @pass_session
    def delete(session: Session, id: int, purge: bool, yes: bool) -> None:
        """Archive ID: hidden from lists, kept for reports, the ledger and the audit trail
        (`restore` brings it back).  With --purge --yes, remove it for real."""
        if purge and not yes:  # no prompt: a purge cannot be undone, so it is said on the command line
            raise ValidationError.single("--yes", f"{kind} {id} is not purged: add --yes to purge it "
                                         "(a purge cannot be undone; without --purge it is archived)")
        removed = service(session.crm).delete(id, purge=purge)
        if purge:
            session.emit_object(_record(removed), f"{kind} {id} purged")
        else:
            session.emit_object(_record(removed), f"{kind} {id} archived: hidden from lists, kept for reports "
                                                  f"(crm {kind} restore {id} brings it back)")

    @group.command("restore")
    @click.argument("id", type=ID)
    @pass_session
    def restore(session: Session, id: int) -> None:
        """Un-archive ID: it is listed, exported and segmented again."""
        restored = service(session.crm).restore(id)
        _show(session, kind, restored, f"{kind} {id} restored")


def archived_options(kind: str) -> Callable[[F], F]:
    """``--archived`` (only archived records) and ``--include-archived`` (all) on a list command."""
    of = " (those of archived customers)" if kind not in ARCHIVING else ""

    def decorate(func: F) -> F:
        func = click.option("--include-archived", "include_archived", is_flag=True,
                            help=f"Archived {kind}s{of} too.")(func)
        return click.option("--archived", "only_archived", is_flag=True,
                            help=f"Only archived {kind}s{of}.")(func)
    return decorate


def archived_choice(only: bool, include: bool) -> Archived:
    """The ``archived`` argument of a listing from its two flags."""
    if only and include:
        raise ValidationError.single("--archived", "give --archived (only archived) or --include-archived "
                                     "(all), not both")
    return "only" if only else "include" if include else "exclude"


def confirm_delete(kind: str, id: int) -> None:
    """Ask on a terminal; without one, refuse (a script must say ``--yes``)."""
    if not sys.stdin.isatty():
        raise ValidationError.single("--yes", f"{kind} {id} is not deleted: give --yes to delete without asking")
    if not click.confirm(f"Delete {kind} {id}?", default=False):
        raise ValidationError.single("--yes", f"{kind} {id} is not deleted")


def _show(session: Session, kind: str, entity: Any, message: str | None) -> None:
    """One record: a JSON object with ``--json``; else ``message`` and a field/value table.

    A customer comes with what a person asks next: segments, contacts,
    recent interactions, deals, points (from the loyalty ledger), recent
    messages and open follow-up tasks, each a table of its own.
    """
    record = _record(entity)
    sections = _customer_sections(session, entity) if kind == "customer" else {}
    if kind == "customer":
        record["segments"] = session.crm.segments.segments_of(entity.id)
    if session.as_json:
        session.emit_object(record | sections)
        return
    if message:
        session.echo(message)
    session.emit_fields(record)
    for title, (rows, columns) in sections.items():
        if not rows:
            continue
        if session.terminal() is None:
            click.echo(f"\n{title.replace('_', ' ')}")
        session.emit(rows, columns=columns, title=title.replace("_", " "))


# The columns each section of ``customer show`` draws (JSON has every field).
SECTION_COLUMNS = {
    "contacts": ["id", "name", "title", "email", "phone", "is_primary"],
    "recent_interactions": ["id", "kind", "direction", "occurred_at", "subject", "outcome", "satisfaction"],
    "deals": ["id", "title", "amount", "currency", "stage", "probability", "closed_at"],
    "points": None,
    "recent_messages": ["id", "channel", "status", "subject", "attempts", "last_error", "provider_id", "sent_at"],
    "open_tasks": ["id", "title", "assignee", "due", "priority", "source"],
}
RECENT = 5  # interactions and messages shown
DEALS_SHOWN = 10
TASKS_SHOWN = 10


def _customer_sections(session: Session, customer: Customer) -> dict[str, Any]:
    """``{section: (rows, columns)}`` for ``customer show``; under ``--json`` just ``{section: rows}``."""
    crm = session.crm
    assert customer.id is not None, "a stored customer has an id"
    mine = {"customer_id": customer.id}
    found: dict[str, list[dict[str, Any]]] = {
        # An archived customer's own records are shown with it (archived="include").
        "contacts": [_record(c) for c in crm.contacts.list(mine, order_by="id", limit=100, archived="include")],
        "recent_interactions": [_record(i) for i in crm.interactions.list(mine, order_by="-occurred_at",
                                                                          limit=RECENT, archived="include")],
        "deals": [_record(d) for d in crm.deals.list(mine, order_by="-id", limit=DEALS_SHOWN,
                                                     archived="include")],
        # Balances, expiry and tiers per scheme, derived from the ledger by the loyalty engine.
        "points": crm.loyalty.status(customer.id, as_of=session.as_of),
        "recent_messages": [
            {k: m[k] for k in SECTION_COLUMNS["recent_messages"] or ()}
            for m in crm.notify.outbox(customer_id=customer.id, limit=RECENT)],
        # Follow-up tasks still to do, soonest due first (crmcore.application.tasks).
        "open_tasks": [_record(t) for t in crm.tasks.list({**mine, "status": "open"}, order_by="due",
                                                          limit=TASKS_SHOWN, archived="include")],
    }
    if session.as_json:
        return found
    # Schemes add fields of their own (a tier's basis, the next tier): show every key any row has.
    return {name: (rows, SECTION_COLUMNS[name] or list(dict.fromkeys(k for row in rows for k in row)))
            for name, rows in found.items()}


def with_customer_names(session: Session, records: Iterable[dict[str, Any]],
                        chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Add ``customer_name`` to records that have a ``customer_id``: one query per ``chunk`` records."""
    rows = iter(records)
    while batch := list(itertools.islice(rows, chunk)):
        ids = sorted({r["customer_id"] for r in batch})
        names = {c.id: c.name for c in session.crm.customers.list({"id__in": ids}, limit=len(ids),
                                                                  archived="include")}
        for row in batch:
            yield _insert_after(row, "customer_id", "customer_name", names.get(row["customer_id"]))


def _insert_after(row: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    """``row`` with ``key`` placed right after ``after`` (JSON keys keep a readable order)."""
    result: dict[str, Any] = {}
    for k, v in row.items():
        result[k] = v
        if k == after:
            result[key] = value
    return result


customer = make_group("customer", Customer, lambda crm: crm.customers)
contact = make_group("contact", Contact, lambda crm: crm.contacts)
interaction = make_group("interaction", Interaction, lambda crm: crm.interactions)
deal = make_group("deal", Deal, lambda crm: crm.deals)


@read_only
@customer.command("search")
@click.argument("text")
@click.option("--limit", type=COUNT, default=50, show_default=True)
@archived_options("customer")
@pass_session
def search(session: Session, text: str, limit: int, only_archived: bool = False,
           include_archived: bool = False) -> None:
    """Find customers whose name, email or phone contains TEXT."""
    archived = archived_choice(only_archived, include_archived)
    rows = session.crm.customers.search(text, limit=one_more(limit), archived=archived)
    columns = None if session.as_json else LIST_COLUMNS["customer"] + (["archived_at"] if archived != "exclude" else [])
    session.emit([_record(r) for r in rows[:limit]], columns=columns)
    if len(rows) > limit:
        session.showing(limit, None, "--limit")


@deal.command("move")
@click.argument("id", type=ID)
@click.argument("stage")
@click.option("--lost-reason", help="Why the deal was lost (for a lost stage).")
@pass_session
def move(session: Session, id: int, stage: str, lost_reason: str | None) -> None:
    """Move deal ID to STAGE (events fire; loyalty schemes earn or reverse)."""
    moved = session.crm.deals.move(id, stage, lost_reason=lost_reason)
    _show(session, "deal", moved, f"deal {id} moved to {stage}")


interaction.add_command(interaction.commands["add"], "log")
