"""The ``apprise`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from typing import Any

import crmcore

from .channel import AppriseChannel


@crmcore.hookimpl
def register_channels(register: Any) -> None:
    register(AppriseChannel())
