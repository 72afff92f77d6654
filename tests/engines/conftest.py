"""Helpers shared by the engine tests.

The components under test are defined in the test modules themselves and
registered through small plugin objects (``crm_factory(extra_plugins=[...])``),
so these tests prove the core engines without any first-party plugin.
"""

from __future__ import annotations

from typing import Any

import crmcore
from crmcore.store import tables
from sqlalchemy import func, select


class Components:
    """A plugin object registering the given components in their families.

    Each instance gets its own plugin name so several can be loaded at once.
    """

    def __init__(self, name: str, *, segmenters: tuple = (), schemes: tuple = (), channels: tuple = (),
                 reports: tuple = (), renderers: tuple = ()):
        self.__name__ = name
        self.segmenters, self.schemes, self.channels = segmenters, schemes, channels
        self.reports, self.renderers = reports, renderers

    @crmcore.hookimpl
    def register_segmenters(self, register: Any) -> None:
        for component in self.segmenters:
            register(component)

    @crmcore.hookimpl
    def register_loyalty_schemes(self, register: Any) -> None:
        for component in self.schemes:
            register(component)

    @crmcore.hookimpl
    def register_channels(self, register: Any) -> None:
        for component in self.channels:
            register(component)

    @crmcore.hookimpl
    def register_reports(self, register: Any) -> None:
        for component in self.reports:
            register(component)

    @crmcore.hookimpl
    def register_renderers(self, register: Any) -> None:
        for component in self.renderers:
            register(component)


def row_count(crm: crmcore.CRM, table: Any, *where: Any) -> int:
    """Rows of a table (optionally filtered), read in a fresh unit."""
    with crm.unit(readonly=True) as uow:
        return uow.conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def ledger_sum(crm: crmcore.CRM, customer_id: int, scheme: str) -> int:
    """The sum of a customer's ledger entries, straight from the table."""
    ledger = tables.loyalty_ledger
    with crm.unit(readonly=True) as uow:
        return int(uow.conn.execute(select(func.coalesce(func.sum(ledger.c.points), 0)).where(
            ledger.c.customer_id == customer_id, ledger.c.scheme == scheme)).scalar_one())
