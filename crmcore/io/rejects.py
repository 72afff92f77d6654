"""The reject file: each rejected row as it was read, plus where and why.

The error columns come first (``error_line``, ``error_column``,
``error_reason``) and the row's own columns follow, so a row that had too many
or too few values is still written exactly as read.  The importer ignores the
error columns, so a corrected reject file can be imported as it is.

The format follows the file's extension (``.csv``, ``.jsonl``, ``.xlsx``);
a CSV reject file uses the input's encoding and delimiter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..domain.errors import CRMError
from .mapping import ERROR_COLUMNS
from .readers import EXTENSIONS, Reader
from .writers import open_writer


class RejectWriter:
    """Writes rejected rows as they happen (nothing is kept in memory)."""

    def __init__(self, path: str | Path, reader: Reader):
        self.path = Path(path)
        self.reader = reader
        self.format = EXTENSIONS.get(self.path.suffix.lower(), "csv")
        self.columns = list(reader.columns) if reader.columns is not None else None
        header = list(ERROR_COLUMNS) + (self.columns if self.columns is not None else
                                        ([] if self.format == "jsonl" else ["row"]))
        self.count = 0
        options: dict[str, Any] = {}
        if self.format == "csv":
            options["encoding"] = getattr(reader, "encoding", "utf-8")
            options["delimiter"] = getattr(reader, "delimiter", ",")
        try:
            self.writer = open_writer(self.path, self.format, header, **options)
        except OSError as exc:
            raise CRMError(f"cannot write the reject file {self.path}: {exc.strerror or exc}") from None

    def write(self, line: int, column: str | None, reason: str, values: Any) -> None:
        self.count += 1
        errors = [line, column or "", reason]
        if self.format == "jsonl":
            record = dict(zip(ERROR_COLUMNS, errors))
            if isinstance(values, dict):
                record.update(values)
            else:
                record.update(zip(self.columns or [], values))
                for i, extra in enumerate((values or [])[len(self.columns or []):], len(self.columns or []) + 1):
                    record[f"#{i}"] = extra
            self.writer.write_record(record)
        elif isinstance(values, dict):
            if self.columns is None:
                self.writer.write_row(errors + [json.dumps(values, ensure_ascii=False, default=str)])
            else:
                self.writer.write_row(errors + [values.get(c) for c in self.columns])
        else:
            self.writer.write_row(errors + list(values or []))

    def close(self) -> None:
        self.writer.close()

