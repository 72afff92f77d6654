"""Each deal's stage at ``as_of``, from the deal stage history, for reports that look back.

A deal counts in the stage it was in at ``as_of``: the ``to_stage`` of its
latest stage-history entry with ``changed_at <= as_of`` (a deal without
history counts in its current stage), and it "entered" that stage at that
entry's ``changed_at`` (else at creation).  Change ids grow with time, so the
highest id is the latest.  So a report for last month does not change when
deals move today.

:func:`deals_then` hands back a subquery with one row per deal selected:
``stage`` (at as_of), ``current_stage``, ``probability`` (today's),
``entered`` and whatever other deal columns the report asks for.
:func:`probability_then` is the rule for the probability at as_of: the
deal's own while it is still in that stage, otherwise the stage's configured
one (the history does not record past probabilities).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, literal, null, select, type_coerce, union_all

import crmcore
from crmcore.store import UTCDateTime, tables, utc_literal

deals = tables.deals
history = tables.deal_stage_history


def deals_then(scope: Any, conditions: Sequence[Any], extra: Mapping[str, Any]) -> Any:
    """The deals matching ``conditions`` with their stage at ``scope.ctx.as_of``, as a subquery.

    ``extra``: more output columns, name -> expression over ``deals``.
    """
    if scope.ctx.conn.dialect.name == "sqlite":
        return _by_lookup(scope, conditions, extra)
    return _by_window(scope, conditions, extra)


def probability_then(then: Any, pipelines: Sequence[crmcore.Pipeline]) -> Any:
    """The probability of each deal of ``then`` (from :func:`deals_then`, with ``pipeline``) at as_of."""
    configured = [(and_(then.c.pipeline == p.name, then.c.stage == s.name), s.probability)
                  for p in pipelines for s in p.stages]
    other_stage = case(*configured, else_=then.c.probability) if configured else then.c.probability
    return case((then.c.stage == then.c.current_stage, then.c.probability), else_=other_stage)


def _by_lookup(scope: Any, conditions: Sequence[Any], extra: Mapping[str, Any]) -> Any:
    """SQLite: per deal, one seek for its latest change up to as_of.

    The ``deal_id`` index holds the row ids in order, so "highest id for this
    deal" is a seek and a step back: 5M deals in about 5 s, against about 28 s
    for sorting deals and changes together for the window.  Not used
    elsewhere: PostgreSQL, without fresh statistics, may answer ``ORDER BY id
    DESC LIMIT 1`` by walking the primary key backwards for every deal.
    """
    latest = (select(history.c.id)
              .where(history.c.deal_id == deals.c.id, history.c.changed_at <= utc_literal(scope.ctx.as_of))
              .order_by(history.c.id.desc()).limit(1).correlate(deals).scalar_subquery())
    own = (select(deals.c.stage.label("current_stage"), deals.c.probability.label("probability"),
                  deals.c.created_at.label("created_at"), latest.label("change_id"),
                  *(value.label(name) for name, value in extra.items()))
           .where(*conditions)).subquery("deal_latest")
    change = history.alias("stage_then")
    return (select(func.coalesce(change.c.to_stage, own.c.current_stage).label("stage"), own.c.current_stage,
                   own.c.probability,
                   type_coerce(func.coalesce(change.c.changed_at, own.c.created_at), UTCDateTime).label("entered"),
                   *(own.c[name] for name in extra))
            .select_from(own.outerjoin(change, change.c.id == own.c.change_id))).subquery("deal_then")


def _by_window(scope: Any, conditions: Sequence[Any], extra: Mapping[str, Any]) -> Any:
    """PostgreSQL and MariaDB: (the deals UNION ALL their changes up to as_of), a window per deal.

    Per deal the ``to_stage`` of the change with the highest id; the deal's
    own row (``change_id`` 0) carries its columns.  No join between deals and
    history on purpose: PostgreSQL, with statistics stale after a bulk load,
    nested-looped such a join (quadratic: 90,000 deals took minutes).
    """
    own = (select(deals.c.id.label("deal_id"), literal(0, Integer).label("change_id"),
                  cast(null(), history.c.to_stage.type).label("to_stage"), deals.c.stage.label("current_stage"),
                  deals.c.probability.label("probability"), deals.c.created_at.label("moment"),
                  *(value.label(name) for name, value in extra.items()))
           .where(*conditions))
    changes = select(history.c.deal_id, history.c.id, history.c.to_stage, null(), null(), history.c.changed_at,
                     *(null() for _ in extra)).where(history.c.changed_at <= utc_literal(scope.ctx.as_of))
    rows = union_all(own, changes).subquery("deal_rows")
    partition, order = rows.c.deal_id, rows.c.change_id.desc()
    latest = func.first_value(rows.c.to_stage).over(partition_by=partition, order_by=order)
    # The deal's own row sorts last (id 0), so with no history its created_at comes first.
    moved_at = func.first_value(rows.c.moment).over(partition_by=partition, order_by=order)
    ranked = select(rows, latest.label("stage_then"), moved_at.label("entered")).subquery("deal_stages")
    return (select(func.coalesce(ranked.c.stage_then, ranked.c.current_stage).label("stage"),
                   ranked.c.current_stage, ranked.c.probability,
                   type_coerce(ranked.c.entered, UTCDateTime).label("entered"),
                   *(ranked.c[name] for name in extra))
            .where(ranked.c.change_id == 0)).subquery("deal_then")
