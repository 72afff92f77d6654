"""crmcore-notify: the first-party ``console`` and ``file`` channels.

Both take no per-customer address (``Channel.address`` is None): they deliver
to whatever ``recipient`` a message names.  Real transports (SMTP, SMS,
webhooks) are separate plugins.
"""

from .console import ConsoleChannel, ConsoleOptions, render_message
from .jsonl import FileChannel, FileOptions, message_line

__version__ = "0.1.0"
__all__ = ["ConsoleChannel", "ConsoleOptions", "FileChannel", "FileOptions", "message_line", "render_message"]
