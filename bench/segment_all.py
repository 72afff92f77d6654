"""The ``all`` segment for the delivery benchmarks: every customer, through the SQL fast path.

``bench/notify.py`` and ``bench/campaign_workers.py`` send a campaign to every customer; this
plugin gives them the segment without depending on any segmentation plugin's rules.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import literal, null, select

import crmcore
from crmcore.store import tables


class AllSegment(crmcore.Segmenter):
    """Segment ``all`` = every customer (the SQL fast path)."""

    name, description = "all", "every customer"

    def select(self, ctx: Any, options: Any) -> Any:
        c = tables.customers
        return select(c.c.id.label("customer_id"), literal("all").label("segment"),
                      null().label("score"), null().label("details"))


class AllSegmentPlugin:
    """Registers :class:`AllSegment`; ``name`` is the plugin's name in the CRM's plugin list."""

    def __init__(self, name: str):
        self.__name__ = name

    @crmcore.hookimpl
    def register_segmenters(self, register: Any) -> None:
        register(AllSegment())
