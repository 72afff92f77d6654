"""The ``reports`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from typing import Any

import crmcore

from .pipeline import PipelineReport


@crmcore.hookimpl
def register_reports(register: Any) -> None:
    register(PipelineReport())
