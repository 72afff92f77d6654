"""The ``segments`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from typing import Any

import crmcore

from .rfm import RFMSegmenter
from .rules import RulesSegmenter


@crmcore.hookimpl
def register_segmenters(register: Any) -> None:
    register(RFMSegmenter())
    register(RulesSegmenter())
