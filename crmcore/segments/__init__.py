"""Segmentation: the engine that runs strategies and records memberships.

Plugins supply :class:`Segmenter` strategies (RFM, lifecycle, rules, models);
the core runs them (``crm.segments.run``), records each :class:`SegmentRun`,
diffs memberships against the previous run, fires
``on_segment_membership_changed`` and explains a customer's assignment.
"""

from .engine import SegmentEngine
from .protocol import (
    Assignment,
    Assignments,
    EveryoneElse,
    MembershipChange,
    SegmentContext,
    Segmenter,
    SegmentRun,
)

__all__ = ["Assignment", "Assignments", "EveryoneElse", "MembershipChange", "SegmentContext", "SegmentEngine",
           "SegmentRun", "Segmenter"]
