"""Geographic segments: by country, region or city, or by territory.

Without a territory map the segment is the customer's value at ``level``
(``country``, ``region`` - the default - or ``city``), or ``"Unknown"`` when
it is empty.  With a map (keys are values at ``level``)::

    [segments.geo]
    level = "region"
    unassigned = "Unassigned"

    [segments.geo.territories]
    "华东" = { territory = "East", owner = "li.wei" }
    "华北" = { territory = "North", owner = "wang.fang" }

the segment is the territory, ``unassigned`` for values not in the map.
``details`` holds ``country``, ``region``, ``city``, ``territory`` and
``owner`` (the territory's owner from the map, NULL without one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import attrs
from sqlalchemy import Select, String, case, func, literal, null, select
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import json_object, tables

customers = tables.customers
LEVELS = ("country", "region", "city")
UNKNOWN = "Unknown"


@attrs.frozen
class Territory:
    """Where a value at the segmenter's level belongs, and who owns it."""

    territory: str
    owner: str | None = None


@attrs.frozen
class GeoOptions:
    """Options of ``geo`` (``[segments.geo]``).

    :ivar level: ``country``, ``region`` or ``city``.
    :ivar territories: value at ``level`` -> territory (and owner).
    :ivar unassigned: segment of customers whose value is not in ``territories``.
    """

    level: str = attrs.field(default="region", validator=attrs.validators.in_(LEVELS))
    territories: dict[str, Territory] = attrs.field(factory=dict)
    unassigned: str = "Unassigned"


class GeoSegmenter(crmcore.Segmenter):
    """One segment per country, region, city or territory."""

    name = "geo"
    description = "Segments by country, region or city, or by territory from a map in crm.toml"
    options_type = GeoOptions

    def select(self, ctx: crmcore.SegmentContext, options: GeoOptions) -> Select[Unpack[tuple[Any, ...]]]:
        """customer_id, segment (value at ``level`` or territory), no score, details."""
        column = customers.c[options.level]
        known = func.coalesce(func.nullif(column, ""), literal(UNKNOWN, String))
        territory: ColumnElement[Any]  # text, or NULL
        owner: ColumnElement[Any]
        segment: ColumnElement[str]
        if options.territories:
            territory = case({k: literal(v.territory, String) for k, v in options.territories.items()},
                             value=column, else_=null())
            owners = {k: literal(v.owner, String) for k, v in options.territories.items() if v.owner}
            owner = case(owners, value=column, else_=null()) if owners else null()
            segment = func.coalesce(territory, literal(options.unassigned, String))
        else:
            territory, owner, segment = null(), null(), known
        details = json_object(ctx.dialect, country=customers.c.country, region=customers.c.region,
                              city=customers.c.city, territory=territory, owner=owner)
        return select(customers.c.id.label("customer_id"), segment.label("segment"), null().label("score"),
                      details.label("details"))

    def explain(self, ctx: crmcore.SegmentContext, options: GeoOptions, membership: Mapping[str, Any]
               ) -> dict[str, Any]:
        """The stored details with the level and the rule that placed the customer."""
        details = dict(membership.get("details") or {})
        value = details.get(options.level)
        if options.territories:
            rule = (f"{options.level} {value!r} maps to territory {details.get('territory')!r}"
                    if details.get("territory") else
                    f"{options.level} {value!r} is not in the territory map: {options.unassigned!r}")
        else:
            rule = f"segment is the customer's {options.level}" + ("" if value else f" (empty: {UNKNOWN!r})")
        return {**details, "level": options.level, "rule": rule}
