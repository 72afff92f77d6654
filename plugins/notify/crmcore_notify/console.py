"""The ``console`` channel: print each message, readably, to stdout or stderr.

For development and demos: run the dispatcher and watch what would have gone
out.  The stream is looked up when a message is sent, not when the channel is
built, so redirections (and pytest's capture) are honoured.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import attrs

import crmcore

STREAMS = ("stdout", "stderr")


def _stream_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in STREAMS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(STREAMS)}, got {value!r}")


@attrs.frozen
class ConsoleOptions:
    """Options of the ``console`` channel (``[channels.console]``).

    :ivar stream: ``"stdout"`` (default) or ``"stderr"``.
    """

    stream: str = attrs.field(default="stdout", validator=_stream_name)


class ConsoleChannel(crmcore.Channel):
    """Writes each message to the terminal."""

    name = "console"
    description = "print messages to stdout or stderr (development, demos)"
    options_type = ConsoleOptions
    address = None  # delivers to whatever recipient the message names
    resend_in_doubt = True  # consumers de-duplicate on idempotency_key (at least once)

    def send(self, message: crmcore.Message, options: ConsoleOptions) -> str | None:
        stream = getattr(sys, options.stream)
        try:
            stream.write(render_message(message))
            stream.flush()
        except ValueError as exc:  # the stream is closed: nothing this process writes will show
            raise crmcore.PermanentError(f"console: {options.stream} is closed ({exc})") from exc
        except OSError as exc:  # a pipe that would block, an I/O error: may pass
            raise crmcore.TransientError(f"console: cannot write to {options.stream}: {exc}") from exc
        return None


def render_message(message: crmcore.Message) -> str:
    """A plain-text rendering of a message, ending with a blank line."""
    to = message.recipient or "(no recipient)"
    if message.customer_id is not None:
        to += f" (customer {message.customer_id})"
    lines = [
        f"--- message {message.id} via {message.channel} ({message.purpose}) ---",
        f"To:      {to}",
        f"Subject: {message.subject or ''}",
        f"Key:     {message.idempotency_key}",
    ]
    if message.body:
        lines += ["", message.body.rstrip("\n")]
    if message.payload:
        lines += ["", "Payload: " + json.dumps(message.payload, ensure_ascii=False, sort_keys=True, default=str)]
    return "\n".join(lines) + "\n\n"
