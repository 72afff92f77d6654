"""ACME's segmenters: one on the Python path, one on the SQL fast path."""

from __future__ import annotations

import attrs
from sqlalchemy import case, literal, null, select

from crmcore import Assignment, Segmenter
from crmcore.store import tables

BATCH = 1000


@attrs.frozen
class TagOptions:
    tag: str = "vip"


class TagSegmenter(Segmenter):
    """Tags are a JSON list, which SQL cannot search portably: Python path."""

    name = "acme-tags"
    description = "Customers by whether their tags contain a tag (default vip)"
    options_type = TagOptions

    def assign(self, ctx, options):
        batch = []
        for customer in ctx.uow.customers.iter():
            segment = options.tag if options.tag in customer.tags else "other"
            batch.append(Assignment(customer.id, segment, details={"tags": list(customer.tags)}))
            if len(batch) == BATCH:
                yield batch
                batch = []
        yield batch


class StageSegmenter(Segmenter):
    name = "acme-stage"
    description = "Open pipeline vs. paying customers, by lifecycle stage"

    def select(self, ctx, options):
        c = tables.customers
        segment = case((c.c.stage == "customer", literal("paying")), else_=literal("pipeline"))
        return select(c.c.id.label("customer_id"), segment.label("segment"),
                      null().label("score"), null().label("details")).where(c.c.stage != "former")
