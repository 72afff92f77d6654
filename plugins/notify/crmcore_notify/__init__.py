"""crmcore-notify: the first-party notification channels.

``console`` and ``file`` (development, audit trails) deliver to whatever
``recipient`` a message names; ``smtp`` sends email to the customer's
address.  See docs/notify.md.
"""

from .console import ConsoleChannel, ConsoleOptions, render_message
from .jsonl import FileChannel, FileOptions, message_line
from .smtp import SmtpChannel, SmtpOptions, build_email

__version__ = "0.1.0"
__all__ = ["ConsoleChannel", "ConsoleOptions", "FileChannel", "FileOptions", "SmtpChannel", "SmtpOptions",
           "build_email", "message_line", "render_message"]
