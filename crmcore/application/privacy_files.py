"""Files the CRM wrote that may hold personal data (import reject files), and scrubbing them.

The importer records each reject file it wrote (:func:`remember`); an erasure rewrites every
recorded file that still exists without the rows holding one of the person's values
(:func:`scrub`).  A file is replaced whole (written next to it, then renamed), so a reader never
sees half of it.  Files moved or copied elsewhere are beyond the CRM's reach: docs/privacy.md
says so.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from ..store.tables import privacy_files

if TYPE_CHECKING:
    from .uow import UnitOfWork

#: The kind of a recorded import reject file.
REJECT_FILE = "reject"


def remember(uow: "UnitOfWork", path: str | Path, kind: str = REJECT_FILE) -> None:
    """Record that the CRM wrote ``path`` (its absolute form) with personal data in it."""
    absolute = str(Path(path).resolve())
    known = uow.conn.execute(select(privacy_files.c.id).where(privacy_files.c.path == absolute)).first()
    if known is None:
        uow.conn.execute(insert(privacy_files).values(path=absolute, kind=kind, written_at=uow.now))


def scrub(uow: "UnitOfWork", values: tuple[str, ...]) -> int:
    """Remove the rows holding one of ``values`` from every recorded file; the rows removed."""
    if not values:
        return 0
    removed = 0
    for (path,) in uow.conn.execute(select(privacy_files.c.path).order_by(privacy_files.c.id)):
        if os.path.isfile(path):
            removed += scrub_file(Path(path), values)
    return removed


def scrub_file(path: Path, values: tuple[str, ...]) -> int:
    """Rewrite ``path`` without its rows that hold one of ``values``; the rows removed."""
    if path.suffix.lower() == ".xlsx":
        return _scrub_xlsx(path, values)
    data = path.read_bytes()
    encoding = _encoding(data)
    text = data.decode(encoding)
    if path.suffix.lower() == ".jsonl":
        kept, removed = _keep(text.splitlines(keepends=True), lambda line: _holds_line(line, values))
        out = "".join(kept)
    else:
        out, removed = _scrub_csv(text, values)
    if removed:
        _replace(path, out.encode(encoding))
    return removed


def _scrub_csv(text: str, values: tuple[str, ...]) -> tuple[str, int]:
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text, newline=""), dialect))
    kept, removed = _keep(rows, lambda row: any(_holds(cell, values) for cell in row))
    buffer = io.StringIO(newline="")
    csv.writer(buffer, delimiter=dialect.delimiter, lineterminator="\r\n").writerows(kept)
    return buffer.getvalue(), removed


def _scrub_xlsx(path: Path, values: tuple[str, ...]) -> int:
    from openpyxl import load_workbook

    book = load_workbook(path)
    removed = 0
    for sheet in book.worksheets:
        doomed = [number for number, row in enumerate(sheet.iter_rows(values_only=True), 1)
                  if any(cell is not None and _holds(str(cell), values) for cell in row)]
        for number in reversed(doomed):
            sheet.delete_rows(number)
        removed += len(doomed)
    if removed:
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".xlsx", delete=False) as handle:
            book.save(handle.name)
        os.replace(handle.name, path)
    return removed


def _keep(items: Iterable[Any], doomed: Callable[[Any], bool]) -> tuple[list[Any], int]:
    kept, removed = [], 0
    for item in items:
        if doomed(item):
            removed += 1
        else:
            kept.append(item)
    return kept, removed


#: Values shorter than this (most Chinese names: 张伟) are matched as whole cells or whole JSON
#: values only; inside longer text they would match too much.
WHOLE_ONLY = 4


def matches(text: str, values: tuple[str, ...]) -> bool:
    """Whether ``text`` holds one of ``values``: a long value anywhere in it (as written or
    JSON-escaped), a short one (< :data:`WHOLE_ONLY` characters) as the whole of it."""
    whole = text.strip()
    return any(whole == v if len(v) < WHOLE_ONLY else (v in text or json.dumps(v)[1:-1] in text) for v in values)


def _holds(text: str, values: tuple[str, ...]) -> bool:
    return matches(text, values)


def _holds_line(line: str, values: tuple[str, ...]) -> bool:
    """A JSON line holds a value: a long one anywhere, a short one as a whole JSON string in it."""
    if matches(line, values):
        return True
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return _holds_json(record, values)


def _holds_json(value: Any, values: tuple[str, ...]) -> bool:
    if isinstance(value, dict):
        return any(_holds_json(v, values) for v in value.values())
    if isinstance(value, list):
        return any(_holds_json(v, values) for v in value)
    return isinstance(value, str) and matches(value, values)


def _encoding(data: bytes) -> str:
    """UTF-8 (with its byte order mark kept when there is one), else GB18030 (what the importer reads)."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "gb18030"


def _replace(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)
