"""SQLite-only CRMs for the duplicates tests where the database does not matter (the merge
tests use ``crm_factory`` on all three)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from crmcore import CRM, Config
from crmcore.testing import FIXED_NOW


@pytest.fixture
def sqlite_crm(crm_sqlite_url: str) -> Iterator[Callable[..., CRM]]:
    opened: list[CRM] = []

    def factory(config: dict[str, Any] | None = None, **kwargs: Any) -> CRM:
        values = {"database_url": crm_sqlite_url, "plugins": [], **(config or {})}
        crm = CRM.open(config=Config.from_mapping(values), clock=lambda: FIXED_NOW, **kwargs)
        opened.append(crm)
        return crm

    yield factory
    for crm in opened:
        crm.close()
