"""crmcore-notify: the first-party notification channels.

``console`` and ``file`` (development, audit trails) deliver to whatever
``recipient`` a message names; ``smtp`` sends email to the customer's
address, ``sms-http`` SMS to their phone through a provider's HTTP API, and
``webhook`` POSTs signed JSON to another system.  See docs/notify.md.
"""

from .console import ConsoleChannel, ConsoleOptions, render_message
from .jsonl import FileChannel, FileOptions, message_line
from .sms_http import SmsHttpChannel, SmsHttpOptions, e164
from .smslength import SmsLength, sms_length
from .smtp import SmtpChannel, SmtpOptions, build_email
from .webhook import WebhookChannel, WebhookOptions, sign, verify_signature

__version__ = "0.1.0"
__all__ = ["ConsoleChannel", "ConsoleOptions", "FileChannel", "FileOptions", "SmsHttpChannel", "SmsHttpOptions",
           "SmsLength", "SmtpChannel", "SmtpOptions", "WebhookChannel", "WebhookOptions", "build_email", "e164",
           "message_line", "render_message", "sign", "sms_length", "verify_signature"]
