"""Helpers shared by the contrib plugin tests (imported as a module, like tests/io/iotools.py)."""

from __future__ import annotations

from crmcore import SegmentContext


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def explain(crm, strategy: str, customer_id: int, as_of, options=None) -> dict:
    """The segmenter's explanation of a customer's latest membership (what
    `crm segment explain` prints), through the public API only."""
    segmenter = crm.segments.registry.get(strategy)
    [membership] = [m for m in crm.segments.members(strategy) if m["customer_id"] == customer_id]
    opts = segmenter.options_type(**(options or {}))
    with crm.unit(readonly=True) as uow:
        return segmenter.explain(SegmentContext(uow, crm.as_of(as_of)), opts, membership)
