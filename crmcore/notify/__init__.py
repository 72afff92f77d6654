"""Notifications: a transactional outbox, its dispatcher, consent and campaigns.

Plugins supply :class:`Channel` components (SMTP, webhooks, SMS gateways);
use cases enqueue :class:`Message` rows inside their transaction, and the
dispatcher (``crm.notify``) delivers them after commit with retries,
backoff, a dead-letter state, rate limits and quiet hours
(:mod:`.policy`). Templated messages (``crm.messages``, :mod:`.templates`)
and campaigns to segments (``crm.campaigns``) respect the recorded consent
decisions (:mod:`.consent`); the ``[notify]`` settings are
:class:`NotifySettings`.
"""

from ..config.notify import NotifySettings
from .campaigns import Campaign, CampaignEngine
from .channels import (
           Channel,
           Delivered,
           DispatchResult,
           Message,
           PermanentError,
           TransientError,
)
from .dispatcher import CLAIM_LEASE, NotifyEngine
from .messages import BatchCounts, MessageEngine
from .outbox import DEFAULT_MAX_ATTEMPTS, PURPOSES, STATUSES, Outbox, backoff
from .policy import DeliveryPolicy
from .templates import Rendered, TemplateCatalog, TemplateError

__all__ = ["CLAIM_LEASE", "DEFAULT_MAX_ATTEMPTS", "PURPOSES", "STATUSES", "BatchCounts", "Campaign",
           "CampaignEngine", "Channel", "Delivered", "DeliveryPolicy", "DispatchResult", "Message",
           "MessageEngine", "NotifyEngine", "NotifySettings", "Outbox", "PermanentError", "Rendered",
           "TemplateCatalog", "TemplateError", "TransientError", "backoff"]
