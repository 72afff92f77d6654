"""crmcore-loyalty: the first-party loyalty schemes and reports.

Schemes: ``points`` (earn rules, multipliers, caps, expiry), ``tiers``
(levels with grace and earn multipliers), ``birthday``, ``referral`` and
``rewards``.  Reports: ``loyalty-liability``, ``loyalty-tiers``,
``loyalty-earn-burn``, ``loyalty-top-members``.  See docs/loyalty.md.
"""

from .birthday import BirthdayOptions, BirthdayScheme
from .points import PointsOptions, PointsScheme, points_for_amount
from .referral import ReferralOptions, ReferralScheme
from .rewards import Reward, RewardsOptions, RewardsScheme
from .tiers import Level, TiersOptions, TiersScheme

__version__ = "0.1.0"
__all__ = [
    "BirthdayOptions", "BirthdayScheme", "Level", "PointsOptions", "PointsScheme", "ReferralOptions",
    "ReferralScheme", "Reward", "RewardsOptions", "RewardsScheme", "TiersOptions", "TiersScheme",
    "points_for_amount",
]
