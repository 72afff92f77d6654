"""Streaming readers for CSV, JSON Lines and XLSX files.

Each reader yields :class:`Record` tuples ``(line, values, problem)`` one at a
time, so memory stays flat however long the file is:

* ``line`` is where the record starts (1-based; the header is line 1 of a CSV
  or XLSX file, and for XLSX it is the sheet's row number);
* ``values`` is a list aligned with :attr:`Reader.columns` (CSV, XLSX) or a
  dict (JSON Lines); for a record that could not be read it holds whatever
  fields could be recovered (for the reject file);
* ``problem`` is ``None`` or ``(column, reason)`` for a record that could not
  be read: a broken quote, a wrong number of columns, bytes that are not in the
  file's encoding, a line that is not JSON.  The reader then carries on with
  the next record, so one bad line does not hide the rest of the file.

``for line, row in reader`` is the convenient form: it yields ``(line, dict)``
and raises :class:`RecordError` at the first unreadable record.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
import zlib
from collections.abc import Generator, Iterator
from decimal import Decimal
from itertools import chain
from pathlib import Path
from typing import IO, Any, NamedTuple

from ..domain.errors import CRMError
from ..domain.spreadsheet import unescape_formula

FORMATS = ("csv", "jsonl", "xlsx")
EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".xlsx": "xlsx", ".xlsm": "xlsx",
}
DELIMITERS = ",;\t|"
SNIFF_BYTES = 64 * 1024
# A field longer than this is almost always a quote that was never closed
# swallowing the lines after it; stopping there keeps memory bounded.
FIELD_LIMIT = 1024 * 1024


class SourceError(CRMError):
    """The file as a whole cannot be read (missing, empty, bad header, unknown format)."""


class RecordError(CRMError):
    """One record could not be read; raised only by ``iter(reader)``."""

    def __init__(self, name: str, line: int, column: str | None, reason: str):
        self.name, self.line, self.column, self.reason = name, line, column, reason
        where = f'column "{column}": ' if column else ""
        super().__init__(f"{name}:{line}: {where}{reason}")


class Record(NamedTuple):
    line: int
    values: Any
    problem: tuple[str | None, str] | None


def detect_format(path: str | Path, format: str | None = None) -> str:
    """The format named by ``format`` or by the file's extension."""
    if format:
        format = format.lower()
        if format not in FORMATS:
            raise SourceError(f"unknown format {format!r} (known: {', '.join(FORMATS)})")
        return format
    suffix = Path(str(path)).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    raise SourceError(f"{Path(str(path)).name}: cannot tell the format from the extension "
                      f"{suffix or '(none)'!r}; give --format {'|'.join(FORMATS)}")


def open_reader(path: str | Path, format: str | None = None, *, encoding: str | None = None,
                delimiter: str | None = None, sheet: str | None = None, raw_csv: bool = False) -> "Reader":
    """Open ``path`` (``-`` for standard input) with the reader for its format.

    A CSV cell that an export escaped against spreadsheet formulas (``'=x``)
    reads as the original text (``=x``) unless ``raw_csv``.
    """
    kind = detect_format(path, format) if str(path) != "-" else (format or "csv")
    if kind == "xlsx":
        return XLSXReader(path, sheet=sheet)
    if kind == "jsonl":
        return JSONLReader(path, encoding=encoding)
    return CSVReader(path, encoding=encoding, delimiter=delimiter, unescape_formulas=not raw_csv)


class Reader:
    """Common parts: the file's display name, progress, context management."""

    format = ""
    columns: list[str] | None = None
    header_line: int  # the header's line number, set by readers whose files have one (columns not None)

    def __init__(self, path: str | Path):
        self.path = path
        self.name = "<stdin>" if str(path) == "-" else Path(str(path)).name
        self.bytes_read = 0
        self.total_bytes: int | None = None
        if str(path) != "-":
            try:
                self.total_bytes = Path(str(path)).stat().st_size
            except OSError as exc:
                raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None

    def records(self) -> Iterator[Record]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for line, values, problem in self.records():
            if problem is not None:
                raise RecordError(self.name, line, problem[0], problem[1])
            yield line, self.as_dict(values)

    def as_dict(self, values: Any) -> dict[str, Any]:
        if isinstance(values, dict):
            return values
        return dict(zip(self.columns or (), values))

    def close(self) -> None:
        pass

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _open_binary(self) -> IO[bytes]:
        if str(self.path) == "-":
            return sys.stdin.buffer
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise SourceError(f"cannot open {self.path}: {exc.strerror or exc}") from None


def _is_blank(values: list[Any]) -> bool:
    for value in values:  # a loop, not all(): most rows answer at the first value
        if value is not None and (value.__class__ is not str or value.strip()):
            return False
    return True


# -- CSV ------------------------------------------------------------------------

class CSVReader(Reader):
    """CSV in any ASCII-compatible encoding (default UTF-8, BOM or not).

    Lines are decoded one at a time, so a byte that is not in the encoding is
    reported on its own line (and column) instead of ending the whole read.  The
    delimiter is sniffed from a sample unless given.  Parsing is strict: a
    quote in the wrong place is an error for that record, and reading resumes
    on the line after the record's first line.
    """

    format = "csv"
    #: A bounded span's bytes (:meth:`span`), read by :meth:`_simple_records` when it can.
    _span_data: bytes | None = None

    def __init__(self, path: str | Path, encoding: str | None = None, delimiter: str | None = None,
                 unescape_formulas: bool = True):
        super().__init__(path)
        self.unescape = unescape_formulas
        self.encoding = _check_encoding(encoding or "utf-8")
        if delimiter is not None:
            delimiter = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(delimiter, delimiter)
            if len(delimiter) != 1 or delimiter in "\"\r\n":
                raise SourceError(f"--delimiter must be one character, got {delimiter!r}")
        self.delimiter: str  # the given one, else the sep= hint line's, else sniffed (set by _start)
        self._fh = self._open_binary()
        self._lineno = 0          # physical lines handed to the csv parser so far
        self._pending: list[str] = []  # lines of the record being parsed (for resync)
        self._bad_lines: dict[int, str] = {}  # decode problems by line number
        self._lines = self._decoded_lines()
        # Set by _resync when the parser met the end of the input inside a quoted value: in a
        # span (see span()) the record may go on past its end, so the span's records are not
        # those a reading of the whole file gives.
        self.ran_out = False
        self._start(delimiter)

    def close(self) -> None:
        if self._fh is not sys.stdin.buffer:
            self._fh.close()

    # -- spans: the records of part of the file, for readers in other processes ------------
    def data_start(self) -> tuple[int, int, int]:
        """(byte offset, line number, bytes per line) of the first line after the header record,
        the bytes per line averaged over up to 100 lines from there; for :func:`spans`.

        Only for a file (not standard input).
        """
        with open(self.path, "rb") as fh:
            for _ in range(self._lineno):
                fh.readline()
            offset = fh.tell()
            sample = [fh.readline() for _ in range(100)]
        lines = [line for line in sample if line]
        return offset, self._lineno + 1, sum(map(len, lines)) // len(lines) if lines else 1

    def span(self, start: int, stop: int | None, first_line: int) -> "CSVReader":
        """A reader of the records in bytes ``start`` to ``stop`` (None: the end) of this reader's
        file, which start at line ``first_line``, read as this reader reads them (encoding,
        delimiter, columns).  Close it when done.

        ``start`` must be where a record starts.  The span's records are those a reading of the
        whole file gives, unless the span ends inside a quoted value (an open record):
        :attr:`ran_out` then tells, once :meth:`records` is exhausted.
        """
        reader = CSVReader.__new__(CSVReader)
        Reader.__init__(reader, self.path)
        reader.unescape, reader.encoding, reader.delimiter = self.unescape, self.encoding, self.delimiter
        reader.dialect, reader.columns, reader.header_line = self.dialect, self.columns, self.header_line
        with open(self.path, "rb") as fh:
            fh.seek(start)
            data = fh.read(stop - start) if stop is not None else None
        reader._span_data = data
        # A bounded span is read at once (a batch's worth of bytes); the rest of a file, as it goes.
        reader._fh = io.BytesIO(data) if data is not None else reader._open_binary()
        if data is None:
            reader._fh.seek(start)
        reader._lineno = first_line - 1
        reader._pending, reader._bad_lines = [], {}
        reader.ran_out = False
        reader._lines = reader._decoded_lines(first_line - 1)
        reader._source = chain(reader._lines)
        reader._parser = csv.reader(reader._feed(), reader.dialect)
        return reader

    def __getstate__(self) -> dict[str, Any]:
        """What a worker needs to read spans (:meth:`span`): not the open file or the parser."""
        return {name: getattr(self, name) for name in (
            "path", "name", "total_bytes", "unescape", "encoding", "delimiter", "columns", "header_line", "_lineno")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.bytes_read = 0
        self.dialect = _dialect(self.delimiter)

    # -- set-up: encoding, delimiter, header -------------------------------------
    def _start(self, delimiter: str | None) -> None:
        sample: list[tuple[int, str]] = []
        size = 0
        for item in self._lines:
            sample.append(item)
            size += len(item[1])
            if size >= SNIFF_BYTES or len(sample) >= 200:
                break
        self._sample = sample
        text_lines = [t for _, t in sample]
        first = next((i for i, t in enumerate(text_lines) if t.strip()), None)
        if first is None:
            raise SourceError(f"{self.name}:1: the file is empty (expected a header line naming the columns)")
        if text_lines[first].strip().lower().startswith("sep=") and len(text_lines[first].strip()) == 5:
            # Excel's "sep=;" hint line.
            delimiter = delimiter or text_lines[first].strip()[4]
            first += 1
        self.delimiter = delimiter or sniff_delimiter(text_lines[first:])
        self.dialect = _dialect(self.delimiter)
        # Feed the parser the sample first, then the rest of the file.
        self._source = chain(sample[first:], self._lines)
        self._lineno = sample[first][0] - 1 if first < len(sample) else self._lineno
        self._parser = csv.reader(self._feed(), self.dialect)
        header = self._next_record()
        if header is None:
            raise SourceError(f"{self.name}:1: the file is empty (expected a header line naming the columns)")
        line, fields, problem = header
        if problem is not None:
            raise SourceError(f"{self.name}:{line}: the header line cannot be read: {problem[1]}")
        self.header_line = line
        names = [f.strip().lstrip("\ufeff") for f in fields]
        if self.unescape:
            names = [unescape_formula(f) for f in names]
        self.columns = check_header(self.name, line, names)

    def _decoded_lines(self, number: int = 0) -> Generator[tuple[int, str], None, None]:
        """(line number, text) of each line after line ``number`` (the file's first line is 1)."""
        decode = codecs.getdecoder(self.encoding)
        for raw in self._fh:
            number += 1
            self.bytes_read += len(raw)
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            try:
                text = decode(raw)[0]
            except UnicodeDecodeError as exc:
                text = raw.decode(self.encoding, errors="replace")
                self._bad_lines[number] = (
                    f"byte {raw[exc.start:exc.start + 1].hex(' ')!s} at position {exc.start + 1} is not valid "
                    f"{self.encoding} (is the file in another encoding? try --encoding gb18030 or utf-8)")
            if number == 1:
                text = text.lstrip("\ufeff")
            yield number, text

    # -- records -------------------------------------------------------------------
    def _feed(self) -> Iterator[str]:
        for number, text in self._source:
            self._lineno = number
            self._pending.append(text)
            yield text

    def _next_record(self) -> Record | None:
        """The next record, skipping blank lines; None at the end of the file."""
        while True:
            start = self._lineno + 1
            self._pending = []
            try:
                fields = next(self._parser)
            except StopIteration:
                return None
            except csv.Error as exc:
                return self._resync(start, exc)
            if self._bad_lines:
                bad = [self._bad_lines.pop(n) for n in range(start, self._lineno + 1) if n in self._bad_lines]
                if bad:
                    column = next((i for i, f in enumerate(fields) if "\ufffd" in f), None)
                    return Record(start, fields, (self._column_name(column), bad[0]))
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            return Record(start, fields, None)

    def _resync(self, start: int, exc: csv.Error | str) -> Record:
        """Report the record starting at ``start``; resume on the line after it."""
        lines = self._pending
        first = lines[0] if lines else ""
        if "unexpected end of data" in str(exc):  # the csv module's words for the input ending in a quote
            self.ran_out = True
        column, reason = self._quote_problem(first, str(exc))
        if len(lines) > 1:
            reason += f" (the quoted field ran on to line {start + len(lines) - 1})"
        rest = [(start + i, text) for i, text in enumerate(lines[1:], 1)]
        self._source = chain(rest, self._source)
        self._lineno = start
        self._parser = csv.reader(self._feed(), self.dialect)
        recovered = first.rstrip("\r\n").split(self.delimiter)  # as written, for the reject file
        self._bad_lines.pop(start, None)
        return Record(start, recovered, (column, reason))

    def _quote_problem(self, line: str, message: str) -> tuple[str | None, str]:
        index, what = locate_quote_error(line.rstrip("\r\n"), self.delimiter)
        column = self._column_name(index)
        if "field larger than field limit" in message:
            return column, f"field longer than {FIELD_LIMIT} characters (a quote that is never closed?)"
        return column, what or f"cannot parse the line: {message}"

    def _column_name(self, index: int | None) -> str | None:
        if index is None:
            return None
        columns = self.columns or []
        return columns[index] if index < len(columns) else f"#{index + 1}"

    def records(self) -> Iterator[Record]:
        simple = self._simple_records() if self._span_data is not None else None
        if simple is not None:
            # The line-by-line reading is not needed: its generators, never started, would keep
            # this reader (and its bytes) in a reference cycle until the cyclic collector ran.
            self._lines.close()
            self._source, self._parser = chain(), csv.reader((), self.dialect)
            yield from simple
            return
        width = len(self.columns or ())
        while True:
            record = self._next_record()
            if record is None:
                return
            line, fields, problem = record
            if problem is None and _is_blank(fields):
                continue
            if problem is None and self._lineno > line and _stray_quote("".join(self._pending), self.delimiter):
                # A record over several lines with a quote inside an unquoted value: a quote
                # that was never closed swallowed the next line(s) up to another quote.
                yield self._resync(line, "quoted value not closed")
                continue
            if self.unescape and problem is None and any("'" in text for text in self._pending):
                fields = [unescape_formula(f) for f in fields]  # an escaped export reads back as written
            if problem is None and len(fields) != width:
                if self._lineno > line and locate_quote_error(self._pending[0].rstrip("\r\n"), self.delimiter)[0] \
                        is not None:
                    # A quote opened on the first line ran on over the following lines and the
                    # result has the wrong width: almost always a quote that was never closed.
                    # Report that line and read the following ones again on their own.
                    yield self._resync(line, "quoted value not closed")
                    continue
                problem = self._width_problem(fields, width)
                if self._lineno > line:
                    problem = (problem[0], problem[1] + f" (the record runs from line {line} to {self._lineno})")
            yield Record(line, fields, problem)

    def span_checksum(self) -> int | None:
        """The CRC-32 of a bounded span's bytes (:meth:`span`), None for another reader: a reading
        of the span again can tell it read the same bytes."""
        return zlib.crc32(self._span_data) if self._span_data is not None else None

    def _simple_records(self) -> list[Record] | None:
        """The records of a bounded span (:meth:`span`) when they are all simple: the span decodes
        (UTF-8), the csv module reads it without an error, and each record is one line with as
        many values as the header has columns.  Then they are what :meth:`records` yields, read
        without its per-line generators (a validation worker reads its spans so).  None when any
        line is not so simple: :meth:`records` reads the span its usual way, which also reports
        the problems (nothing of this reading is kept).
        """
        data, first = self._span_data, self._lineno + 1
        if data is None or self.encoding != "utf-8" or first <= 1:  # line 1: its BOM is _decoded_lines'
            return None
        try:  # the lines as _decoded_lines decodes them, one at a time (strict: an error falls back)
            lines = list(map(bytes.decode, io.BytesIO(data)))
        except UnicodeDecodeError:
            return None
        width, unescape = len(self.columns or ()), self.unescape
        parser = csv.reader(lines, self.dialect)
        records: list[Record] = []
        number = first - 1  # the line the parser read last (its line_num counts the lines read)
        try:
            for fields in parser:
                number += 1
                if parser.line_num != number - first + 1:  # a record over several lines: records() checks it
                    return None
                # Blank records, skipped as _next_record and records() skip them.
                if not fields or (len(fields) == 1 and not fields[0].strip()) or _is_blank(fields):
                    continue
                if unescape and "'" in lines[number - first]:
                    fields = [unescape_formula(f) for f in fields]
                if len(fields) != width:
                    return None
                records.append(tuple.__new__(Record, (number, fields, None)))
        except csv.Error:
            return None
        return records

    def _width_problem(self, fields: list[str], width: int) -> tuple[str, str]:
        columns = self.columns or []
        if len(fields) > width:
            extra = next((i for i in range(width, len(fields)) if fields[i].strip()), width)
            if all(not f.strip() for f in fields[width:]):
                return f"#{width + 1}", (f"{len(fields)} values but the header has {width} columns "
                                          f"(trailing empty values)")
            return f"#{extra + 1}", (f"{len(fields)} values but the header has {width} columns: "
                                     f"unexpected value {fields[extra]!r}")
        return columns[len(fields)], (f"{len(fields)} values but the header has {width} columns: "
                                      f"no value for this column or the ones after it")


def locate_quote_error(line: str, delimiter: str, quote: str = '"') -> tuple[int | None, str | None]:
    """The field index and description of a quoting error on one line."""
    index, i, n = 0, 0, len(line)
    while i <= n:
        if i < n and line[i] == quote:
            j = i + 1
            while True:
                close = line.find(quote, j)
                if close < 0:
                    return index, "a quoted value is not closed (missing closing \")"
                if close + 1 < n and line[close + 1] == quote:
                    j = close + 2
                    continue
                break
            after = close + 1
            if after < n and line[after] != delimiter:
                return index, (f"unexpected {line[after]!r} after the closing quote "
                               f"(a quoted value must be followed by {delimiter!r} or the line end)")
            i = after + 1
        else:
            nxt = line.find(delimiter, i)
            i = n + 1 if nxt < 0 else nxt + 1
        index += 1
    return None, None


def _stray_quote(text: str, delimiter: str, quote: str = '"') -> bool:
    """Whether a record's text has a quote inside an unquoted value (RFC 4180 does not allow it)."""
    i, n = 0, len(text)
    while i < n:
        if text[i] == quote:  # a quoted value: to its closing quote ("" is an escaped quote)
            i += 1
            while i < n:
                if text[i] == quote:
                    if i + 1 < n and text[i + 1] == quote:
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            if i < n and text[i] not in (delimiter, "\r", "\n"):
                return True
        while i < n and text[i] not in (delimiter, "\n"):
            if text[i] == quote:
                return True
            i += 1
        i += 1
    return False


def sniff_delimiter(lines: list[str]) -> str:
    """The delimiter of a CSV sample: csv.Sniffer, checked against the header line."""
    sample = "".join(lines[:50])
    header = next((t for t in lines if t.strip()), "")
    try:
        found = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        found = None
    if found and header.count(found):
        return found
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _dialect(delimiter: str, strict: bool = True) -> type[csv.Dialect]:
    class Dialect(csv.Dialect):
        pass
    Dialect.delimiter = delimiter
    Dialect.quotechar = '"'
    Dialect.doublequote = True
    Dialect.skipinitialspace = False
    Dialect.lineterminator = "\n"
    Dialect.quoting = csv.QUOTE_MINIMAL
    Dialect.strict = strict
    return Dialect


def _check_encoding(encoding: str) -> str:
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise SourceError(f"unknown encoding {encoding!r} (e.g. utf-8, utf-8-sig, gb18030, latin-1)") from None
    name = info.name
    if name.startswith(("utf-16", "utf-32")):
        raise SourceError(f"encoding {encoding!r} is not supported for CSV; convert the file to UTF-8 first")
    return "utf-8" if name == "utf-8-sig" else name


def check_header(name: str, line: int, columns: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for i, column in enumerate(columns, 1):
        if column and column in seen:
            raise SourceError(f'{name}:{line}: column "{column}" appears twice in the header '
                              f"(columns {seen[column]} and {i})")
        seen[column] = i
    return columns


csv.field_size_limit(FIELD_LIMIT)


class Span(NamedTuple):
    """Bytes ``start`` to ``stop`` of a CSV file, starting at line ``first_line``; ``last``: to the end."""

    start: int
    stop: int
    first_line: int
    last: bool


def spans(path: str | Path, start: int, first_line: int, size: int, quote: bytes = b'"') -> Iterator[Span]:
    """The bytes of ``path`` from ``start`` (where line ``first_line`` starts) in spans of about
    ``size`` bytes, each ending at a line end with an even count of quotes since ``start``: in a
    well-formed file, outside any quoted value, so where a record starts (:meth:`CSVReader.span`
    tells when a span ends inside one all the same).  Reads the file in blocks; memory stays flat.
    """
    with open(path, "rb") as fh:
        fh.seek(start)
        line = first_line
        while True:
            block = fh.read(size)
            if not block:
                return
            block += fh.readline()
            odd = block.count(quote) % 2
            # Inside a quoted value (or after a stray quote): the next line end with an even count, as
            # far as the csv module would read one value (a worker finds out when the cut is wrong).
            while odd and len(block) < size + 4 * FIELD_LIMIT:
                more = fh.readline()
                if not more:
                    break
                block += more
                odd = (odd + more.count(quote)) % 2
            stop = start + len(block)
            last = not fh.peek(1)
            yield Span(start, stop, line, last)
            if last:
                return
            line += block.count(b"\n")
            start = stop


# -- JSON Lines -------------------------------------------------------------------

class JSONLReader(Reader):
    """One JSON object per line; numbers with a fraction are read as Decimal (exact)."""

    format = "jsonl"

    def __init__(self, path: str | Path, encoding: str | None = None):
        super().__init__(path)
        self.encoding = encoding or "utf-8"
        _check_encoding(self.encoding)
        self._fh = self._open_binary()
        first = self._fh.peek(1)[:1] if hasattr(self._fh, "peek") else b"x"
        if not first:
            raise SourceError(f"{self.name}:1: the file is empty (expected one JSON object per line)")

    def close(self) -> None:
        if self._fh is not sys.stdin.buffer:
            self._fh.close()

    def records(self) -> Iterator[Record]:
        refused: list[_Refused] = []

        def constant(name: str) -> _Refused:
            refused.append(_Refused(f"{name} is not a number (JSON has no {name})"))
            return refused[-1]

        loads = json.JSONDecoder(parse_float=Decimal, parse_constant=constant).decode
        seen_any = False
        for number, raw in enumerate(self._fh, 1):
            self.bytes_read += len(raw)
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            try:
                text = raw.decode(self.encoding)
            except UnicodeDecodeError as exc:
                yield Record(number, {}, (None, f"byte {raw[exc.start:exc.start + 1].hex()} at position "
                                                f"{exc.start + 1} is not valid {self.encoding}"))
                continue
            if not text.strip():
                continue
            seen_any = True
            try:
                value = loads(text)
            except json.JSONDecodeError as exc:
                yield Record(number, {"_raw": text.rstrip("\r\n")},
                             (None, f"not valid JSON: {exc.msg} (character {exc.colno})"))
                continue
            except (ValueError, RecursionError) as exc:
                yield Record(number, {"_raw": text.rstrip("\r\n")}, _unreadable_json(text, exc))
                continue
            if refused or ("\\u" in text and _SURROGATE_ESCAPE.search(text)):
                problem = _refused_value(value, refused)
                refused.clear()
                if problem is not None:
                    yield Record(number, {"_raw": text.rstrip("\r\n")}, problem)
                    continue
            if not isinstance(value, dict):
                yield Record(number, {"_raw": text.rstrip("\r\n")},
                             (None, f"expected a JSON object, got {type(value).__name__}"))
                continue
            yield Record(number, value, None)
        if not seen_any:
            raise SourceError(f"{self.name}:1: the file is empty (expected one JSON object per line)")


# Beyond this many digits Python refuses to convert text to an integer (sys.get_int_max_str_digits).
MAX_DIGITS = 4000
# \uD800-\uDFFF escapes: a surrogate, valid only as half of a pair.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class _Refused:
    """A JSON value the reader will not pass on (NaN, Infinity, an integer of thousands of digits)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _refused_value(value: dict[str, Any], refused: list[_Refused]) -> tuple[str | None, str] | None:
    """(field, reason) for the first field holding a refused value or text that is not valid Unicode."""
    for key, item in value.items():
        if not _valid_text(key):
            return None, f"a field name holds an unpaired surrogate ({_escaped(key)}), which is not valid Unicode"
        reason = _refused_in(item) if refused or not isinstance(item, (int, Decimal, bool)) else None
        if reason is not None:
            return key, reason
    return None


def _refused_in(value: Any) -> str | None:
    if isinstance(value, _Refused):
        return value.reason
    if isinstance(value, str):
        if not _valid_text(value):
            return f"{_escaped(value)} holds an unpaired surrogate, which is not valid Unicode"
        return None
    items: Any = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        reason = _refused_in(key) if isinstance(key, str) else None
        reason = reason or _refused_in(item)
        if reason is not None:
            return reason
    return None


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str) -> str:
    shown = text if len(text) <= 40 else text[:40] + "..."
    return repr(shown.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace"))


def _unreadable_json(text: str, exc: BaseException) -> tuple[str | None, str]:
    """(field, reason) for a line json cannot take: nested too deep, or an integer of too many digits."""
    if isinstance(exc, RecursionError):
        return _top_level_key(text, _nesting_limit(text)), "nested too deeply to read"
    digits: list[int] = []

    def integer(literal: str) -> Any:
        if len(literal.lstrip("-")) > MAX_DIGITS:
            digits.append(len(literal.lstrip("-")))
            return _Refused(f"a number of {digits[-1]} digits is too large")
        return int(literal)

    try:
        value = json.JSONDecoder(parse_float=Decimal, parse_int=integer).decode(text)
    except (ValueError, RecursionError):
        return None, f"not valid JSON: {exc}"
    if isinstance(value, dict):
        problem = _refused_value(value, [_Refused("")])
        if problem is not None:
            return problem
    return None, f"not valid JSON: {exc}"


def _nesting_limit(text: str) -> int:
    return min(sys.getrecursionlimit() // 2, max(text.count("[") + text.count("{") - 1, 1))


def _top_level_key(text: str, limit: int) -> str | None:
    """The key of the top-level field in which brackets nest ``limit`` deep (None if none does)."""
    depth, i, n = 0, 0, len(text)
    key: str | None = None
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            if depth == 1:
                rest = text[end + 1:end + 64].lstrip()
                if rest.startswith(":"):
                    try:
                        key = json.loads(text[i:end + 1])
                    except ValueError:
                        key = text[i + 1:end]
            i = end + 1
            continue
        if char in "[{":
            depth += 1
            if depth > limit:
                return key
        elif char in "]}":
            depth -= 1
        i += 1
    return key


# -- XLSX -------------------------------------------------------------------------

class XLSXReader(Reader):
    """The first (or the named) sheet of a workbook, streamed (openpyxl read-only).

    The first row is the header.  Numbers with a fraction become Decimal through
    their shortest text form, so ``12000.5`` stays ``12000.5``; formulas give
    their cached value.
    """

    format = "xlsx"

    def __init__(self, path: str | Path, sheet: str | None = None):
        super().__init__(path)
        if str(path) == "-":
            raise SourceError("XLSX cannot be read from standard input; give a file")
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            self._book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except (InvalidFileException, OSError, KeyError, ValueError) as exc:
            raise SourceError(f"{self.name}: not a readable XLSX workbook ({exc})") from None
        except Exception as exc:  # zipfile.BadZipFile and friends
            raise SourceError(f"{self.name}: not a readable XLSX workbook ({exc})") from None
        if sheet is not None and sheet not in self._book.sheetnames:
            self._book.close()
            raise SourceError(f"{self.name}: no sheet {sheet!r} (sheets: {', '.join(self._book.sheetnames)})")
        self._sheet = self._book[sheet] if sheet else self._book.worksheets[0]
        self._rows = self._sheet.iter_rows(values_only=True)
        self._row_number = 0
        header = None
        for values in self._rows:
            self._row_number += 1
            if values and not _is_blank(list(values)):
                header = list(values)
                break
        if header is None:
            raise SourceError(f"{self.name}:1: the sheet is empty (expected a header row naming the columns)")
        while header and (header[-1] is None or str(header[-1]).strip() == ""):
            header.pop()
        self.header_line = self._row_number
        self.columns = check_header(self.name, self._row_number,
                                    ["" if c is None else str(c).strip() for c in header])
        self.total_rows = self._sheet.max_row

    def close(self) -> None:
        self._book.close()

    def records(self) -> Iterator[Record]:
        width = len(self.columns or ())
        for values in self._rows:
            self._row_number += 1
            if not values:
                continue
            row = [_cell(v) for v in values]
            while len(row) > width and (row[-1] is None or row[-1] == ""):
                row.pop()
            if _is_blank(row):
                continue
            if len(row) > width:
                extra = next(i for i in range(width, len(row)) if row[i] not in (None, ""))
                yield Record(self._row_number, row, (f"#{extra + 1}", f"a value {row[extra]!r} in a column "
                                                                       f"without a header"))
                continue
            row.extend([None] * (width - len(row)))
            yield Record(self._row_number, row, None)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return Decimal(repr(value))
    return value


def read_all(path: str | Path, **options: Any) -> list[tuple[int, dict[str, Any]]]:
    """Every row of a (small) file as ``(line, dict)``; for tests and scripts."""
    with open_reader(path, **options) as reader:
        return list(reader)


__all__ = ["CSVReader", "JSONLReader", "Record", "RecordError", "Reader", "SourceError", "Span", "XLSXReader",
           "detect_format", "locate_quote_error", "open_reader", "read_all", "sniff_delimiter", "spans"]
