"""The reject file: each rejected row as it was read, plus where and why.

The error columns come first (``error_line``, ``error_column``,
``error_reason``) and the row's own columns follow, so a row that had too many
or too few values is still written exactly as read.  The importer ignores the
error columns, so a corrected reject file can be imported as it is.

The format follows the file's extension (``.csv``, ``.jsonl``, ``.xlsx``);
a CSV reject file uses the input's encoding and delimiter, or UTF-8 with a
byte order mark for Excel (``--excel``, or ``excel_csv`` in crm.toml, when the
input is UTF-8).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..domain.errors import CRMError
from .mapping import ERROR_COLUMNS
from .readers import EXTENSIONS, Reader
from .writers import excel_encoding, open_writer


def check_reject_target(path: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse a reject file that is one of the import's inputs (the file, a mapping file, the database).

    Compared as files (a symbolic or hard link, ``./x.csv`` for ``x.csv``), so
    writing rejects never replaces what is being read.
    """
    target = Path(path)
    for source in inputs:
        if source is None or str(source) in ("", "-", ":memory:"):
            continue
        if _same_file(target, Path(source)):
            raise CRMError(f"--reject-file {path} is an input of this import ({source}); "
                           "write the rejected rows to another file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where the names lead
        return os.path.realpath(a) == os.path.realpath(b)


class RejectWriter:
    """Writes rejected rows as they happen (nothing is kept in memory)."""

    def __init__(self, path: str | Path, reader: Reader, escape_formulas: bool = True,
                 excel: bool | None = None, excel_default: bool = False):
        self.path = Path(path)
        self.reader = reader
        self.format = EXTENSIONS.get(self.path.suffix.lower(), "csv")
        self.columns = list(reader.columns) if reader.columns is not None else None
        header = list(ERROR_COLUMNS) + (self.columns if self.columns is not None else
                                        ([] if self.format == "jsonl" else ["row"]))
        self.count = 0
        options: dict[str, Any] = {}
        if self.format == "csv":
            options["encoding"] = excel_encoding(getattr(reader, "encoding", None), excel, excel_default)
            options["delimiter"] = getattr(reader, "delimiter", ",")
            options["escape_formulas"] = escape_formulas
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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

