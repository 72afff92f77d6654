"""crmcore-apprise: the ``apprise`` notification channel (see README.md)."""

from .channel import AppriseChannel, AppriseOptions

__version__ = "0.1.0"
__all__ = ["AppriseChannel", "AppriseOptions"]
