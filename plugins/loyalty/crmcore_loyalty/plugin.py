"""The ``loyalty`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from typing import Any

import crmcore

from .points import PointsScheme


@crmcore.hookimpl
def register_loyalty_schemes(register: Any) -> None:
    register(PointsScheme())
