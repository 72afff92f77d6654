"""The ``segments`` plugin's hook implementations (the entry point)."""

from __future__ import annotations


import crmcore

from .geo import GeoSegmenter
from .lifecycle import LifecycleSegmenter
from .rfm import RFMSegmenter
from .rules import RulesSegmenter
from .value_tier import ValueTierSegmenter


@crmcore.hookimpl
def register_segmenters(register: crmcore.Register[crmcore.Segmenter]) -> None:
    """Register rfm, lifecycle, value-tier, rules and geo."""
    for segmenter in (RFMSegmenter(), LifecycleSegmenter(), ValueTierSegmenter(), RulesSegmenter(),
                      GeoSegmenter()):
        register(segmenter)
