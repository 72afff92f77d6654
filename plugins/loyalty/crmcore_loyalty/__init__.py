"""crmcore-loyalty: the first-party ``points`` loyalty scheme.

See :mod:`crmcore_loyalty.points` for what earns points and when they expire.
"""

from .points import PointsOptions, PointsScheme, points_for_amount

__version__ = "0.1.0"
__all__ = ["PointsOptions", "PointsScheme", "points_for_amount"]
