"""Segmentation: the engine that runs strategies and records memberships.

Plugins supply :class:`Segmenter` strategies (RFM, lifecycle, rules, models);
the core runs them (``crm.segments.run``), records each :class:`SegmentRun`,
diffs memberships against the previous run, fires
``on_segment_membership_changed`` and explains a customer's assignment.
"""

from .engine import SegmentEngine
from .memberships import MembershipChanges
from .protocol import (
    Assignment,
    Assignments,
    EveryoneElse,
    MembershipChange,
    SegmentContext,
    Segmenter,
    SegmentRun,
)
from .reference import ResolvedSegment, SegmentRef, parse_segment_ref, resolve_segment

__all__ = ["Assignment", "Assignments", "EveryoneElse", "MembershipChange", "MembershipChanges", "ResolvedSegment", "SegmentContext",
           "SegmentEngine", "SegmentRef", "SegmentRun", "Segmenter", "parse_segment_ref", "resolve_segment"]
