"""The ``clv`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from typing import Any

import crmcore

from .segmenter import CLVSegmenter


@crmcore.hookimpl
def register_segmenters(register: Any) -> None:
    register(CLVSegmenter())
