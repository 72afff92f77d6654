"""The ``apprise`` channel: one message to one or more Apprise URLs.

Apprise answers a notification with True or False only; the reason for a
False is in its log, which the channel captures and puts into the error (so
``crm notify outbox`` shows it).  Which failures are permanent cannot be told
from a bool, so every failed send is retried (and dead-lettered after
``max_attempts``); a URL Apprise cannot parse is permanent at once.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import attrs

import crmcore

if TYPE_CHECKING:
    import apprise


def _urls(instance: Any, attribute: attrs.Attribute, value: list[str]) -> None:
    for url in value:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"{attribute.name}: {url!r} is not an Apprise URL (scheme://...)")


@attrs.frozen
class AppriseOptions:
    """Options of the ``apprise`` channel (``[channels.apprise]``).

    :ivar urls: Apprise URLs every message goes to (unless its recipient is a URL).
    :ivar notify_type: ``info``, ``success``, ``warning`` or ``failure``
        (services that show a colour or icon use it).
    """

    urls: list[str] = attrs.field(factory=list, validator=_urls)
    notify_type: str = attrs.field(default="info", validator=attrs.validators.in_(
        ("info", "success", "warning", "failure")))


class AppriseChannel(crmcore.Channel):
    """Sends through Apprise (100+ services)."""

    name = "apprise"
    description = "send through Apprise URLs (Slack, Telegram, Teams, ntfy, JSON endpoints, 100+ services)"
    options_type = AppriseOptions
    address = None

    def __init__(self) -> None:
        self._local = threading.local()

    def open(self, options: AppriseOptions) -> None:
        self._local.configured = targets(options.urls)

    def send(self, message: crmcore.Message, options: AppriseOptions) -> str | None:
        recipient = message.recipient or ""
        if "://" in recipient:
            destination = targets([recipient])
        else:
            destination = getattr(self._local, "configured", None) or targets(options.urls)
        if not len(destination):
            raise crmcore.PermanentError("apprise: no URLs: set [channels.apprise] urls or give a URL as recipient")
        import apprise  # here, not at the top: registering the channel must not load Apprise (start-up time)

        with apprise.LogCapture(level=logging.WARNING) as log:
            ok = destination.notify(body=message.body or message.subject or "", title=message.subject or "",
                                    notify_type=apprise.NotifyType(options.notify_type))
        if not ok:
            reason = " ".join(log.getvalue().split())[:300] or "no reason given"
            raise crmcore.TransientError(f"apprise: notification failed: {reason}")
        return None

    def close(self) -> None:
        self._local.configured = None


def targets(urls: list[str]) -> apprise.Apprise:
    """An Apprise object for ``urls``; a URL Apprise does not understand is permanent."""
    import apprise

    destination = apprise.Apprise()
    for url in urls:
        if not destination.add(url):
            raise crmcore.PermanentError(f"apprise: {url!r} is not a URL Apprise understands")
    return destination
