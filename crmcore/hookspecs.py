"""Every hook a crmcore plugin can implement.

Three kinds:

* ``register_*``: called once at start-up; call ``register(component)`` for
  each thing you provide.  The core records which plugin registered what.
* ``on_*``: events fired inside the unit of work of the use case that caused
  them.  Write through ``uow``; raising rolls the whole change back.
* decisions: ``validate_*`` (every result collected; any message blocks the
  write), ``authorize`` (any False refuses) and ``visibility`` (every
  condition applies).

Implement a hook with ``@crmcore.hookimpl`` and a function of the same name;
you may accept fewer arguments than the spec lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime

    import click
    from fastapi import APIRouter

    from .app import CRM
    from sqlalchemy.sql import ColumnElement

    from .application.registry import Register
    from .application.roles import Role
    from .application.uow import UnitOfWork
    from .domain.customfields import CustomField
    from .domain.entities import Contact, Customer, Deal, Interaction, Stage, Task
    from .loyalty import LoyaltyScheme
    from .migrations import PluginSchema
    from .notify import Channel
    from .reports import DashboardEntry, Renderer, Report
    from .segments import MembershipChanges, Segmenter, SegmentRun

hookspec = pluggy.HookspecMarker("crmcore")
"""Mark a function as a crmcore hook specification (used in this module only)."""


# -- registration ------------------------------------------------------------

@hookspec
def register_segmenters(register: Register[Segmenter]) -> None:
    """Register segmentation strategies.

    :param register: call ``register(segmenter)`` with an object following
        :class:`crmcore.segments.Segmenter`.
    """


@hookspec
def register_loyalty_schemes(register: Register[LoyaltyScheme]) -> None:
    """Register loyalty schemes.

    :param register: call ``register(scheme)`` with an object following
        :class:`crmcore.loyalty.LoyaltyScheme`.
    """


@hookspec
def register_channels(register: Register[Channel]) -> None:
    """Register notification channels.

    :param register: call ``register(channel)`` with an object following
        :class:`crmcore.notify.Channel`.
    """


@hookspec
def register_reports(register: Register[Report]) -> None:
    """Register report generators.

    :param register: call ``register(report)`` with an object following
        :class:`crmcore.reports.Report`.
    """


@hookspec
def register_renderers(register: Register[Renderer]) -> None:
    """Register report output formats beyond the core's table, csv and json.

    :param register: call ``register(renderer)`` with a
        :class:`crmcore.reports.Renderer`.
    """


@hookspec
def register_custom_fields(register: Register[CustomField]) -> None:
    """Declare typed custom fields on entities.

    :param register: call ``register(CustomField(entity, name, type, ...))``.
    """


@hookspec
def register_migrations(register: Register[PluginSchema]) -> None:
    """Declare tables the plugin owns and the Alembic revisions that create them.

    :param register: call ``register(crmcore.migrations.PluginSchema(...))``.
    """


@hookspec
def register_templates(register: Register[str | os.PathLike[str]]) -> None:
    """Ship message templates (see :mod:`crmcore.notify.templates` for the layout).

    Directories registered here are searched after ``[notify] templates_dir``,
    so a company can override any file of a plugin's template.

    :param register: call ``register(path)`` with a directory holding one
        sub-directory per template kind.
    """


@hookspec
def register_settings(register: Register[type[Any]]) -> None:
    """Declare the plugin's settings: an attrs class filled from ``[plugins.NAME]``.

    NAME is the plugin's registered name.  The table (and ``CRM_PLUGIN_NAME_KEY``
    environment overrides) is validated into the class when the CRM opens;
    read it anywhere with ``crm.settings_for(TheClass)``.

    :param register: call ``register(TheClass)`` once with an attrs class.
    """


@hookspec
def register_roles(register: Register[Role], crm: CRM) -> None:
    """Register :class:`crmcore.Role` objects: the roles users may carry.

    Called once the CRM's configuration and plugin settings are loaded (``crm``),
    so a plugin can register roles its settings define.

    :param register: call it with each role.
    :param crm: the :class:`crmcore.CRM` being opened.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``crm`` command line.

    :param cli: the root :class:`click.Group`; call ``cli.add_command(...)``.
    """


@hookspec
def register_routes(router: APIRouter, crm: CRM) -> None:
    """Add routes to the HTTP API (``crm serve``, :func:`crmcore.web.create_app`).

    Every route on ``router`` needs an API token and acts as the token's user:
    call the CRM's services from it (``crm.customers.get(id)``) and they ask
    ``authorize``, apply record visibility and write the audit trail.  Raise a
    :class:`crmcore.CRMError` and the client gets an RFC 9457 problem.  Routes are
    mounted at the API's root; prefix them with your plugin's name.  A route class
    subclassing :class:`crmcore.web.TokenRoute` (``route_class_override=``) may take
    the token from elsewhere, e.g. a session cookie (docs/api.md, "Routes from plugins").
    A GET route named ``page:LABEL`` (``name=``) is a page people open: ``crm serve``
    prints its address, and calls this hook once more to find it.

    :param router: a :class:`fastapi.APIRouter`; add routes with its decorators.
    :param crm: the :class:`crmcore.CRM` the API serves.
    """


@hookspec
def render_dashboard(crm: CRM, entries: list[DashboardEntry], as_of: datetime) -> str | None:
    """The ``index.html`` of ``crm report dashboard`` (:meth:`crm.reports.dashboard`), or None.

    The first plugin answering with a page replaces the core's plain list of links; the page
    should link each written report (``entry.file``) and be self-contained (it is opened
    from a folder, offline).  It runs as the user exporting, after every report was written.

    :param crm: the :class:`crmcore.CRM` exporting.
    :param entries: one :class:`crmcore.reports.DashboardEntry` per report, written or not.
    :param as_of: the moment the reports were run as of (aware).
    """


# -- events (inside the unit of work) -----------------------------------------

@hookspec
def on_customer_created(uow: UnitOfWork, customer: Customer) -> None:
    """A customer was added.

    :param uow: the :class:`crmcore.application.uow.UnitOfWork` of the change.
    :param customer: the new :class:`crmcore.Customer` (with its id).
    """


@hookspec
def on_customer_updated(uow: UnitOfWork, customer: Customer, previous: Customer) -> None:
    """A customer was changed.

    :param uow: the unit of work of the change.
    :param customer: the customer as stored now.
    :param previous: the customer before the change.
    """


@hookspec
def on_customer_deleted(uow: UnitOfWork, customer: Customer) -> None:
    """A customer was deleted (with its contacts, interactions and deals).

    :param uow: the unit of work of the change.
    :param customer: the customer as it was.
    """


@hookspec
def on_customers_imported(uow: UnitOfWork, customers: list[Customer]) -> None:
    """A batch of customers was added by a bulk path (import, demo).

    Fired once per batch instead of ``on_customer_created`` per row.

    :param uow: the unit of work of the batch.
    :param customers: the list of new customers.
    """


@hookspec
def on_contacts_imported(uow: UnitOfWork, contacts: list[Contact]) -> None:
    """A batch of contacts was added by a bulk path (import, demo).

    :param uow: the unit of work of the batch.
    :param contacts: the list of new contacts (with ids).
    """


@hookspec
def on_interactions_imported(uow: UnitOfWork, interactions: list[Interaction]) -> None:
    """A batch of interactions was added by a bulk path (import, demo).

    :param uow: the unit of work of the batch.
    :param interactions: the list of new interactions (with ids).
    """


@hookspec
def on_deals_imported(uow: UnitOfWork, deals: list[Deal]) -> None:
    """A batch of deals was added by a bulk path (import, demo).

    Fired instead of ``on_deal_created`` / ``on_deal_stage_changed`` per deal;
    loyalty schemes still earn for deals that arrive won.

    :param uow: the unit of work of the batch.
    :param deals: the list of new deals (with ids).
    """


@hookspec
def on_customers_merged(uow: UnitOfWork, kept: Customer, merged: list[Customer]) -> None:
    """Customers were merged into one (``crm customer merge``, ``crm.merges.merge``).

    Fired after every row moved (the core's and the plugins', ``merge_customer_rows``),
    balances, tiers and consent were rebuilt and the merged customers archived.

    :param uow: the unit of work of the merge.
    :param kept: the kept customer as stored now.
    :param merged: the merged customers, archived.
    """


@hookspec
def on_customers_unmerged(uow: UnitOfWork, kept: Customer, restored: list[Customer]) -> None:
    """A merge was undone (``crm customer unmerge``, ``crm.merges.unmerge``).

    Fired after the moved rows went back (the core's and the plugins', ``unmerge_customer_rows``),
    balances, tiers and consent were rebuilt and the merged customers were restored, live again.

    :param uow: the unit of work of the unmerge.
    :param kept: the kept customer as stored now (its merged fields back to their before-state).
    :param restored: the customers the merge had archived, live again, in the merge's order.
    """


@hookspec
def merge_customer_rows(uow: UnitOfWork, kept_id: int, merged_ids: list[int], moved: dict[str, Any]) -> None:
    """Move the plugin's own rows of merged customers to the kept one, inside the merge's unit of work.

    Record what moved in ``moved`` under the plugin's own key: it is stored with the merge and handed
    back to ``unmerge_customer_rows``.  ``uow.crm.merges.move_rows(uow, table, kept_id, merged_ids)``
    re-points a table with ``id`` and ``customer_id`` columns and returns what to record::

        moved["acme_welcomes"] = uow.crm.merges.move_rows(uow, acme_welcomes, kept_id, merged_ids)

    :param uow: the unit of work of the merge.
    :param kept_id: the customer that stays.
    :param merged_ids: the customers merged into it (archived by the merge).
    :param moved: a dict to record the moved rows in (JSON values), keyed by the plugin's table names.
    """


@hookspec
def unmerge_customer_rows(uow: UnitOfWork, kept_id: int, merged_ids: list[int], moved: dict[str, Any]) -> None:
    """Move the plugin's rows back to the customers of an undone merge (``crm customer unmerge``).

    ``uow.crm.merges.restore_rows(uow, table, moved["acme_welcomes"])`` undoes ``move_rows``.

    :param uow: the unit of work of the unmerge.
    :param kept_id: the customer that was kept.
    :param merged_ids: the customers the merge archived, live again after it.
    :param moved: what ``merge_customer_rows`` recorded (every plugin's keys).
    """


@hookspec
def on_contact_created(uow: UnitOfWork, contact: Contact) -> None:
    """A contact was added.

    :param uow: the unit of work of the change.
    :param contact: the new :class:`crmcore.Contact`.
    """


@hookspec
def on_contact_updated(uow: UnitOfWork, contact: Contact, previous: Contact) -> None:
    """A contact was changed.

    :param uow: the unit of work of the change.
    :param contact: the contact as stored now.
    :param previous: the contact before the change.
    """


@hookspec
def on_contact_deleted(uow: UnitOfWork, contact: Contact) -> None:
    """A contact was deleted.

    :param uow: the unit of work of the change.
    :param contact: the contact as it was.
    """


@hookspec
def on_interaction_created(uow: UnitOfWork, interaction: Interaction) -> None:
    """An interaction was logged.

    :param uow: the unit of work of the change.
    :param interaction: the new :class:`crmcore.Interaction`.
    """


@hookspec
def on_interaction_updated(uow: UnitOfWork, interaction: Interaction,
                           previous: Interaction) -> None:
    """An interaction was changed (e.g. resolved).

    :param uow: the unit of work of the change.
    :param interaction: the interaction as stored now.
    :param previous: the interaction before the change.
    """


@hookspec
def on_interaction_deleted(uow: UnitOfWork, interaction: Interaction) -> None:
    """An interaction was deleted.

    :param uow: the unit of work of the change.
    :param interaction: the interaction as it was.
    """


@hookspec
def on_deal_created(uow: UnitOfWork, deal: Deal) -> None:
    """A deal was added.

    :param uow: the unit of work of the change.
    :param deal: the new :class:`crmcore.Deal`.
    """


@hookspec
def on_deal_updated(uow: UnitOfWork, deal: Deal, previous: Deal) -> None:
    """A deal's fields were changed (a stage change also fires ``on_deal_stage_changed``).

    :param uow: the unit of work of the change.
    :param deal: the deal as stored now.
    :param previous: the deal before the change.
    """


@hookspec
def on_deal_deleted(uow: UnitOfWork, deal: Deal) -> None:
    """A deal was deleted.

    :param uow: the unit of work of the change.
    :param deal: the deal as it was.
    """


@hookspec
def on_deal_stage_changed(uow: UnitOfWork, deal: Deal, old: Stage | None, new: Stage | None,
                          transition_id: int) -> None:
    """A deal moved between stages (also fired on creation, with ``old=None``).

    :param uow: the unit of work of the change.
    :param deal: the deal after the move.
    :param old: the previous :class:`crmcore.Stage`, or None for a new deal.
    :param new: the new :class:`crmcore.Stage`.
    :param transition_id: the id of the stage-history row; unique per move,
        so it makes a good idempotency key.
    """


@hookspec
def on_task_created(uow: UnitOfWork, task: Task) -> None:
    """A follow-up task was added (by someone, or automatically for an interaction's follow-up
    date or a complaint: ``task.source`` says which).

    :param uow: the unit of work of the change.
    :param task: the new :class:`crmcore.Task`.
    """


@hookspec
def on_task_updated(uow: UnitOfWork, task: Task, previous: Task) -> None:
    """A task's fields were changed (completing it also fires ``on_task_completed``).

    :param uow: the unit of work of the change.
    :param task: the task as stored now.
    :param previous: the task before the change.
    """


@hookspec
def on_task_completed(uow: UnitOfWork, task: Task, previous: Task) -> None:
    """A task was done or cancelled (``task.status`` says which; ``task.completed_at`` when).

    :param uow: the unit of work of the change.
    :param task: the task as stored now.
    :param previous: the open task before.
    """


@hookspec
def on_task_deleted(uow: UnitOfWork, task: Task) -> None:
    """A task was deleted.

    :param uow: the unit of work of the change.
    :param task: the task as it was.
    """


@hookspec
def on_tasks_imported(uow: UnitOfWork, tasks: list[Task]) -> None:
    """Tasks were added in bulk (``crm.tasks.add_many``, ``crm import tasks``); no per-task events.

    :param uow: the unit of work of the import.
    :param tasks: the stored tasks, with their ids.
    """


@hookspec
def on_segment_membership_changed(uow: UnitOfWork, run: SegmentRun,
                                  changes: MembershipChanges) -> None:
    """Customers entered, left or moved between segments of a strategy.

    Fired once per run with every change (a batch event).

    :param uow: the unit of work of the segmentation run.
    :param run: the :class:`crmcore.segments.SegmentRun`.
    :param changes: a :class:`crmcore.MembershipChanges`: a read-only sequence of
        :class:`crmcore.MembershipChange`, read on first use (iterate it, or ask
        ``changes.entering(segment)`` for the ids entering one segment in one query).
    """


@hookspec
def on_loyalty_tier_changed(uow: UnitOfWork, customer_id: int, scheme: str, old: str | None,
                            new: str | None) -> None:
    """A customer's tier in a loyalty scheme changed.

    :param uow: the unit of work of the change.
    :param customer_id: the customer.
    :param scheme: the scheme's name.
    :param old: the previous tier name or None.
    :param new: the new tier name or None.
    """


@hookspec
def on_loyalty_tiers_changed(uow: UnitOfWork, scheme: str,
                             moves: Sequence[tuple[int, str | None, str | None]]) -> None:
    """Customers' tiers in a loyalty scheme changed (a batch event: every move of one job or
    evaluation, fired once, before :func:`on_loyalty_tier_changed` fires per move).

    A tier job moves up to every member at once; a listener that acts on few moves (say, a
    trigger for upgrades to one tier) costs one call here, not one per move.

    :param uow: the unit of work of the change.
    :param scheme: the scheme's name.
    :param moves: ``(customer_id, old, new)`` per moved customer (tier names or None), in
        customer order for a job; read-only.  ``len(moves)`` costs nothing; a job's moves are
        read from the database on first use, which must be during the call: a listener that
        keeps them for later keeps ``list(moves)``.
    """


@hookspec
def on_scheduled(uow: UnitOfWork, as_of: datetime) -> None:
    """The daily scheduled run (``crm notify run-scheduled --as-of DATE``).

    For date-driven work (birthday greetings, reminders).  Run daily; keep the
    work idempotent per day or year (idempotency keys), since the job may run
    twice.

    :param uow: the unit of work of the run.
    :param as_of: the instant the run stands for (aware UTC); the calendar day
        is ``as_of`` in the configured timezone.
    """


@hookspec
def export_personal_data(uow: UnitOfWork, customer: Customer) -> Mapping[str, list[dict[str, Any]]] | None:
    """Contribute the rows a plugin holds about one person to a subject access export
    (``crm customer export-data``).

    :param uow: the unit of work of the export (read it through ``uow.conn``).
    :param customer: the customer whose data is exported.
    :returns: None, or ``{"TABLE or section": [row, ...]}`` with JSON-ready rows.
    """


@hookspec
def erase_personal_data(uow: UnitOfWork, customer: Customer, values: tuple[str, ...]) -> int | None:
    """Remove or irreversibly anonymise what a plugin holds about one person
    (``crm customer erase``), in the erasure's unit of work.

    Keep what the books need (amounts, dates) in anonymous form; remove names,
    addresses, free text.  Called again for a person already erased: be idempotent.

    :param uow: the unit of work of the erasure.
    :param customer: the customer as stored before the erasure.
    :param values: the person's distinctive values (name, email, phone, external id and
        those of their contacts) to look for in free text; one shorter than 4 characters
        (a 2-character Chinese name) must match a whole value only, never part of a text.
    :returns: the number of rows changed or removed (None: nothing).
    """


# -- decisions -----------------------------------------------------------------

@hookspec
def validate_customer(uow: UnitOfWork, customer: Customer,
                      previous: Customer | None) -> Iterable[tuple[str, str] | str] | None:
    """Extra rules for a customer about to be written.

    :param uow: the unit of work of the change.
    :param customer: the normalised customer to be written.
    :param previous: the stored customer for an update, None for a new one.
    :returns: None, or a list of ``(field, message)`` pairs (or messages) that
        block the write.
    """


@hookspec
def validate_contact(uow: UnitOfWork, contact: Contact,
                     previous: Contact | None) -> Iterable[tuple[str, str] | str] | None:
    """Extra rules for a contact about to be written.

    :param uow: the unit of work of the change.
    :param contact: the contact to be written.
    :param previous: the stored contact for an update, None for a new one.
    :returns: None or a list of ``(field, message)`` pairs.
    """


@hookspec
def validate_interaction(uow: UnitOfWork, interaction: Interaction,
                         previous: Interaction | None) -> Iterable[tuple[str, str] | str] | None:
    """Extra rules for an interaction about to be written.

    :param uow: the unit of work of the change.
    :param interaction: the interaction to be written.
    :param previous: the stored interaction for an update, None for a new one.
    :returns: None or a list of ``(field, message)`` pairs.
    """


@hookspec
def validate_deal(uow: UnitOfWork, deal: Deal,
                  previous: Deal | None) -> Iterable[tuple[str, str] | str] | None:
    """Extra rules for a deal about to be written.

    :param uow: the unit of work of the change.
    :param deal: the deal to be written.
    :param previous: the stored deal for an update, None for a new one.
    :returns: None or a list of ``(field, message)`` pairs.
    """


@hookspec
def validate_task(uow: UnitOfWork, task: Task,
                  previous: Task | None) -> Iterable[tuple[str, str] | str] | None:
    """Extra rules for a follow-up task about to be written.

    :param uow: the unit of work of the change.
    :param task: the task to be written.
    :param previous: the stored task for an update, None for a new one.
    :returns: None or a list of ``(field, message)`` pairs.
    """


@hookspec
def authorize(actor: str, action: str, resource: object, crm: CRM) -> bool | None:
    """May ``actor`` perform ``action``?  Consulted by every use case.

    Every plugin's answer is collected: any False refuses, whatever the others
    said (a policy can only be tightened by adding a plugin).

    :param actor: the acting user's login (``--as``, ``with crm.acting(login):``),
        ``"system"`` when nobody was named; never None.
    :param action: e.g. ``"customer.create"``, ``"deal.move"``,
        ``"loyalty.redeem"``, ``"segment.members"``, ``"report.run"``, ``"db.upgrade"``
        (the list: docs/users-and-audit.md).
    :param resource: the entity or name the action is about (may be None).
    :param crm: the :class:`crmcore.CRM` asking (its configuration and
        ``crm.settings_for(...)``, the plugin's settings).
    :returns: True to allow, False to refuse, None to leave it to others.
        When no plugin returns False the action is allowed.
    """


@hookspec
def visibility(actor: str, entity: str, crm: CRM) -> ColumnElement[bool] | None:
    """Which records may ``actor`` see?  A condition, applied in SQL to every read.

    ``entity`` is ``"customer"`` (a condition on ``crmcore.store.tables.customers``)
    or ``"deal"`` (on ``crmcore.store.tables.deals``).  Every plugin's condition
    applies (they are joined with AND).  Contacts, interactions, loyalty
    entries, messages, segment memberships and every other table with a
    ``customer_id`` follow their customer; deals follow their customer unless
    some plugin answers for ``"deal"``.  Lists, searches, counts, exports,
    segment member listings and reports all read through these conditions.

    :param actor: the acting user's login (``system`` when nobody was named).
    :param entity: ``"customer"`` or ``"deal"``.
    :param crm: the :class:`crmcore.CRM` asking.
    :returns: a SQLAlchemy boolean expression over the entity's table, or None
        for no restriction.
    """
