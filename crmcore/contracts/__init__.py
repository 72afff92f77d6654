"""Contract classes: behavioural tests a plugin's component must pass.

Subclass one in a test module, provide the ``component`` fixture (and the
family's other fixtures), and pytest runs the family's checks against it:

* :class:`SegmenterContract`: memberships, explain, empty database.
* :class:`LoyaltySchemeContract`: ledger and balances, idempotent jobs.
* :class:`ChannelContract`: delivery to a real endpoint, failure classification.
* :class:`ReportContract`: table shape, core renderers, empty database, ``as_of``.

They need the fixtures of :mod:`crmcore.testing` (``crm_factory``), the
pytest plugin crmcore installs.  Import them from :mod:`crmcore.testing`.
"""

from .base import ComponentPlugin, Contract
from .channel import ChannelContract
from .data import BEFORE_ANY_DATA, FIXED_NOW, Generated, generate
from .loyalty import LoyaltySchemeContract
from .report import ReportContract
from .segmenter import SegmenterContract

__all__ = ["BEFORE_ANY_DATA", "ChannelContract", "ComponentPlugin", "Contract", "FIXED_NOW", "Generated",
           "LoyaltySchemeContract", "ReportContract", "SegmenterContract", "generate"]
