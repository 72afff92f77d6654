"""The ``file`` channel: append each message as one JSON object per line.

JSON Lines in UTF-8 (``ensure_ascii=False``: Chinese and other text stays
readable).  Each line holds ``id, idempotency_key, channel, recipient,
subject, body, payload, purpose, customer_id``; a consumer should de-duplicate
on ``idempotency_key``, because delivery is at least once (a message whose
"sent" mark was lost is sent again).

Durability: every line is flushed to the operating system as it is written (a
crash of this process loses nothing already marked sent), and the file is
fsync'ed once per dispatch batch in :meth:`FileChannel.close` (one fsync per
batch rather than per message keeps large batches fast).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import IO, Any

import attrs

import crmcore

FIELDS = ("id", "idempotency_key", "channel", "recipient", "subject", "body", "payload", "purpose",
          "customer_id")


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must name a file")


@attrs.frozen
class FileOptions:
    """Options of the ``file`` channel (``[channels.file]``).

    :ivar path: the JSON Lines file to append to (relative to the working
        directory); missing parent directories are created.
    """

    path: str = attrs.field(default="outbox.jsonl", validator=_non_empty)


class FileChannel(crmcore.Channel):
    """Appends messages to a JSON Lines file."""

    name = "file"
    description = "append messages to a JSON Lines file (UTF-8), one object per line"
    options_type = FileOptions
    address = None  # delivers to whatever recipient the message names
    resend_in_doubt = True  # consumers de-duplicate on idempotency_key (at least once)

    def __init__(self) -> None:
        # One channel object serves every dispatch of a CRM; two threads
        # dispatching at once must each have (and close) their own handle.
        self._local = threading.local()

    def open(self, options: FileOptions) -> None:
        path = Path(options.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._local.file = path.open("a", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise classify(exc, path) from exc

    def send(self, message: crmcore.Message, options: FileOptions) -> str | None:
        file: IO[str] | None = getattr(self._local, "file", None)
        if file is None:  # send() without open(): a caller outside the dispatcher
            raise crmcore.PermanentError("file channel used without open()")
        try:
            file.write(message_line(message))
            file.flush()
        except OSError as exc:
            raise classify(exc, Path(options.path)) from exc
        return None

    def close(self) -> None:
        file: IO[str] | None = getattr(self._local, "file", None)
        if file is None:
            return
        self._local.file = None
        try:
            file.flush()
            os.fsync(file.fileno())
        finally:
            file.close()


def classify(exc: OSError, path: Path) -> crmcore.TransientError | crmcore.PermanentError:
    """A path naming a directory is a wrong configuration: permanent.  Anything else (a full
    disk, a parent that is a file or not writable yet) may be put right: transient."""
    error = crmcore.PermanentError if isinstance(exc, IsADirectoryError) else crmcore.TransientError
    return error(f"file: cannot write {path}: {exc.strerror or exc}")


def message_line(message: crmcore.Message) -> str:
    """One JSON Lines record (with its newline) for a message."""
    record = {name: getattr(message, name) for name in FIELDS}
    text = json.dumps(record, ensure_ascii=False, default=str)
    # Valid JSON may carry raw U+2028/U+2029, but line splitters such as
    # str.splitlines() break on them; escaping keeps one record per line.
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"
