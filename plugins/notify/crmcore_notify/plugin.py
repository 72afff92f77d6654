"""The ``notify`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from typing import Any

import crmcore

from .console import ConsoleChannel
from .jsonl import FileChannel
from .sms_http import SmsHttpChannel
from .smtp import SmtpChannel
from .webhook import WebhookChannel


@crmcore.hookimpl
def register_channels(register: Any) -> None:
    register(ConsoleChannel())
    register(FileChannel())
    register(SmtpChannel())
    register(WebhookChannel())
    register(SmsHttpChannel())
