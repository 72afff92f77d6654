"""Helpers shared by the first-party plugin tests."""

from __future__ import annotations

from datetime import datetime

import pytest

from crmcore.testing import FIXED_NOW

# The default pipeline written out (the tests give their own pipeline set, and
# ``pipelines`` in the configuration replaces the built-in one).
DEFAULT_STAGES = [
    {"name": "lead", "probability": 10},
    {"name": "qualified", "probability": 25},
    {"name": "proposal", "probability": 50},
    {"name": "negotiation", "probability": 75},
    {"name": "won", "probability": 100, "outcome": "won"},
    {"name": "lost", "probability": 0, "outcome": "lost"},
]
# A second pipeline whose won stage is called "signed" and which has an *open*
# stage called "won": a plugin that looks at stage names instead of the
# configured outcome gets it wrong.
B2B_STAGES = [
    {"name": "intro", "probability": 5},
    {"name": "won", "probability": 60},
    {"name": "signed", "probability": 100, "outcome": "won"},
    {"name": "dropped", "probability": 0, "outcome": "lost"},
]


class Clock:
    """A clock tests move by hand (``crm_factory(clock=clock)``)."""

    def __init__(self, now: datetime = FIXED_NOW):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A hand-moved clock starting at crmcore.testing.FIXED_NOW."""
    return Clock()


@pytest.fixture
def pipelines() -> dict:
    """The ``pipelines`` configuration the plugin tests use (default + b2b)."""
    return {"default": {"stages": [dict(s) for s in DEFAULT_STAGES]},
            "b2b": {"stages": [dict(s) for s in B2B_STAGES]}}
