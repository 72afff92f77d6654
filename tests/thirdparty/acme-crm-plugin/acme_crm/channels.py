"""ACME's log-file channel."""

from __future__ import annotations

from pathlib import Path

import attrs

from crmcore import Channel, PermanentError, TransientError


@attrs.frozen
class LogOptions:
    path: str = "acme-messages.log"


class LogChannel(Channel):
    name = "acme-log"
    description = "Append each delivered message as one line to a file"
    options_type = LogOptions
    address = "email"

    def send(self, message, options):
        if not message.recipient:
            raise PermanentError("no recipient")
        try:
            with Path(options.path).open("a", encoding="utf-8") as fh:
                fh.write(f"{message.idempotency_key}\t{message.recipient}\t{message.subject or ''}\n")
        except OSError as exc:
            raise TransientError(str(exc)) from exc
        return message.idempotency_key
