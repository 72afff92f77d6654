"""The ``kmeans`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from typing import Any

import crmcore

from .segmenter import KMeansSegmenter


@crmcore.hookimpl
def register_segmenters(register: Any) -> None:
    register(KMeansSegmenter())
