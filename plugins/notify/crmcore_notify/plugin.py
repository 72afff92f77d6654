"""The ``notify`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from pathlib import Path

import crmcore

from .console import ConsoleChannel
from .jsonl import FileChannel
from .robots import DingTalkChannel, WeComChannel
from .sms_http import SmsHttpChannel
from .smtp import SmtpChannel
from .triggers import (  # noqa: F401 - hook implementations of this plugin
    on_deal_stage_changed,
    on_interaction_created,
    on_loyalty_tiers_changed,
    on_scheduled,
    on_segment_membership_changed,
)
from .webhook import WebhookChannel


@crmcore.hookimpl
def register_channels(register: crmcore.Register[crmcore.Channel]) -> None:
    """Register console, file, smtp, webhook, sms-http, wecom and dingtalk."""
    register(ConsoleChannel())
    register(FileChannel())
    register(SmtpChannel())
    register(WebhookChannel())
    register(SmsHttpChannel())
    register(WeComChannel())
    register(DingTalkChannel())


@crmcore.hookimpl
def register_templates(register: crmcore.Register[Path]) -> None:
    """Built-in templates: thank-you, tier-upgrade, win-back, birthday, complaint-ack (en, zh-CN)."""
    register(Path(__file__).with_name("templates"))
