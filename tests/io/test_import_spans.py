"""With workers, a CSV file is read by the workers in spans (crmcore.io.readers.spans /
CSVReader.span): the records, lines and problems must be exactly those of one reading of the
whole file, and an import must store and report exactly what a single-process import does."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iotools import read_csv

from crmcore.application import consent_history
from crmcore.io.importer import ImportOptions, import_file
from crmcore.io.readers import CSVReader, Record, spans
from crmcore.store import tables
from crmcore import CRM
from crmcore.config import Config
from crmcore.contracts.data import FIXED_NOW

HEADER = b"external_id,name,email,phone,stage,tags\n"


def open_crm(url: str) -> CRM:
    return CRM.open(config=Config.from_mapping({"database_url": url, "plugins": []}), clock=lambda: FIXED_NOW)


def _by_spans(reader: CSVReader, size: int) -> list[Record]:
    """The records as the importer gets them with workers: span by span, and from a span that ran
    out (ended inside a quoted value) on, one reading to the end (crmcore.io.importer.run_spans)."""
    start, line, _ = reader.data_start()
    records: list[Record] = []
    for span in spans(reader.path, start, line, size):
        part = reader.span(span.start, span.stop, span.first_line)
        got = list(part.records())
        part.close()
        if part.ran_out and not span.last:
            rest = reader.span(span.start, None, span.first_line)
            records += rest.records()
            rest.close()
            break
        records += got
    return records


PIECES = [b'C1,Ann,a@example.com,,lead,', b'C2,"Bo\nb",b@example.com,,lead,"x,y"', b'C3,"say ""hi""",,,lead,',
          b'C4,Unclosed "quote,,,lead,', b'C5,"open', b'C6,"two\n\nlines",,,lead,', b'', b'   ',
          b'C7,bad \xff byte,,,lead,', b'C8,too,many,values,here,now,more', b'C9,short', b'"C10",x"y,,,lead,',
          b'C11,"a"b,,,lead,', b"C12,'=1+2,,,lead,", b'C13,\xe5\xbc\xa0\xe4\xbc\x9f,,,lead,', b'C14,"end"']


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.sampled_from(PIECES), max_size=25), size=st.integers(1, 120),
       crlf=st.booleans(), bom=st.booleans(), last_newline=st.booleans())
def test_spans_give_the_records_of_one_reading(tmp_path: Path, lines: list[bytes], size: int, crlf: bool,
                                                bom: bool, last_newline: bool) -> None:
    end = b"\r\n" if crlf else b"\n"
    body = end.join(line.replace(b"\n", end) for line in lines) + (end if last_newline else b"")
    path = tmp_path / "hostile.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + HEADER.replace(b"\n", end) + body)
    with CSVReader(path) as whole:
        expected = list(whole.records())
    with CSVReader(path) as reader:
        assert _by_spans(reader, size) == expected


def test_a_span_cut_inside_a_quoted_value_says_so(tmp_path: Path) -> None:
    # The stray quote of line 2 makes the quotes' count odd there, so the cut moves on to the next line
    # end with an even count: inside line 3's quoted value, which runs on to line 4.
    path = tmp_path / "stray.csv"
    path.write_bytes(HEADER + b'C1,a"b,,,lead,\nC2,"multi\nline",,,lead,\nC3,Cy,,,lead,\n')
    with CSVReader(path) as reader:
        start, line, _ = reader.data_start()
        first = next(spans(path, start, line, 1))
        assert (first.first_line, first.last) == (2, False)
        part = reader.span(first.start, first.stop, first.first_line)
        list(part.records())
        assert part.ran_out
        whole = list(CSVReader(path).records())
        assert _by_spans(reader, 1) == whole
        assert [r.line for r in whole] == [2, 3, 5]


def _import(tmp_path: Path, file: Path, workers: int, batch_size: int, key: str = "external_id") -> tuple:
    db = tmp_path / f"w{workers}-{batch_size}-{key}.db"
    crm = open_crm(f"sqlite:///{db}")
    try:
        reject = tmp_path / f"rejects-{workers}-{batch_size}-{key}.csv"
        report = import_file(crm, "customers", file, ImportOptions(
            workers=workers, batch_size=batch_size, on_error="skip", reject_file=reject, key=key))
        stored = [(c.external_id, c.name, c.email, c.phone, c.tags) for c in crm.customers.list()]
        with crm.engine.connect() as conn:
            consents = [tuple(r[1:]) for r in conn.execute(tables.customer_consents.select().order_by(
                tables.customer_consents.c.customer_id))]
            history = [tuple(r._mapping[c] for c in consent_history.COLUMNS) for r in conn.execute(
                tables.consent_history.select().order_by(tables.consent_history.c.id))]
        return (stored, report.rows, report.inserted, report.rejected, report.error_messages(),
                read_csv(reject) if reject.exists() else None, consents, history)
    finally:
        crm.close()


def test_workers_reading_spans_import_what_one_process_imports(tmp_path: Path) -> None:
    rows = [f"C{i},名字 {i},u{i}@Example.com,+86 138 {i:04d} {i:04d},lead,\"a,b\"".encode() for i in range(40)]
    rows[5] = b'C5,"Multi\nline name",m@example.com,,lead,'
    rows[9] = b"C9,bad \xff byte,,,lead,"
    rows[14] = b'C14,Stray "quote,s@example.com,,lead,'
    rows[20] = b"C20,too,many,values,here,now,more"
    rows[25] = b"C3,Duplicate key,d@example.com,,lead,"
    rows[30] = b'C30,"never closed,,,lead,'
    file = tmp_path / "hostile.csv"
    file.write_bytes(HEADER + b"\n".join(rows) + b"\n\n")
    single = _import(tmp_path, file, 0, 4)
    assert single[3] >= 5 and single[5] is not None
    for batch_size in (1, 3, 7):
        assert _import(tmp_path, file, 2, batch_size) == _import(tmp_path, file, 0, batch_size)


def test_consents_of_new_customers_are_those_of_the_general_path(tmp_path: Path) -> None:
    # --key id takes the general insert (no bound rows), whose consents go through flags_set
    rows = [f"C{i},N{i},c{i}@example.com,{'true' if i % 3 else 'false'}" for i in range(12)]
    file = tmp_path / "consents.csv"
    file.write_text("external_id,name,email,consent_marketing\n" + "\n".join(rows) + "\n", encoding="utf-8")
    bound = _import(tmp_path, file, 0, 5)
    general = _import(tmp_path, file, 0, 5, key="id")
    assert bound[6] == general[6] and bound[7] == general[7]
    assert len(bound[6]) == 8 and len(bound[7]) == 8


def test_a_simple_span_is_read_in_one_go_and_others_the_usual_way(tmp_path: Path) -> None:
    # A span whose records are each one line of the header's width is read by one csv reader over
    # its lines (CSVReader._simple_records); a span with a record over several lines, a short
    # record or a byte that does not decode is read line by line.  Both give one reading's records.
    simple = [b"C1,Ann,a@example.com,,lead,", b'C2,"say ""hi""",,,lead,"x,y"', b"", b"C3,'=1+2,,,lead,",
              b"C4,\xe5\xbc\xa0\xe4\xbc\x9f,,,lead,"]
    others = [b'C5,"Bo\nb",,,lead,', b"C6,short", b"C7,bad \xff byte,,,lead,", b'C8,"open']
    for crlf in (False, True):
        end = b"\r\n" if crlf else b"\n"
        for odd in [None, *others]:
            lines = simple + ([odd] if odd is not None else []) + [b"C9,Last,,,lead,"]
            path = tmp_path / "spans.csv"
            path.write_bytes(HEADER.replace(b"\n", end) + end.join(line.replace(b"\n", end) for line in lines) + end)
            with CSVReader(path) as reader:
                start, line, _ = reader.data_start()
                span = next(spans(path, start, line, 1 << 20))
                part = reader.span(span.start, span.stop, span.first_line)
                fast = part._simple_records()
                assert (fast is not None) == (odd is None)
                assert list(part.records()) == list(CSVReader(path).records())
                if fast is not None:
                    assert fast == list(CSVReader(path).records())
                    assert [r.line for r in fast] == [2, 3, 5, 6, 7]
                # A span's reader (and its bytes) goes with its last reference, without waiting for
                # the cyclic collector (a worker reads hundreds of spans with it relaxed).
                gc.disable()
                try:
                    part = reader.span(span.start, span.stop, span.first_line)
                    list(part.records())
                    gone = weakref.ref(part)
                    del part
                    assert gone() is None
                finally:
                    gc.enable()


def test_a_file_changed_while_it_is_imported_is_an_error_not_other_cells(tmp_path: Path) -> None:
    # The workers keep the cells of the rows they validate; the importing process reads a span's
    # cells again from the file only for a row that needs them (a rejection, an update), and
    # refuses bytes other than those the worker read.
    from crmcore.io.importer import _SpanCells
    from crmcore.io.readers import SourceError

    path = tmp_path / "changing.csv"
    path.write_bytes(HEADER + b"C1,Ann,,,lead,\nC2,Bob,,,lead,\n")
    with CSVReader(path) as reader:
        start, line, _ = reader.data_start()
        span = next(spans(path, start, line, 1 << 20))
        part = reader.span(span.start, span.stop, span.first_line)
        checksum = part.span_checksum()
        assert _SpanCells(reader, span, checksum).row(1) == ["C2", "Bob", "", "", "lead", ""]
        path.write_bytes(HEADER + b"C1,Ann,,,lead,\nC2,Rob,,,lead,\n")
        try:
            _SpanCells(reader, span, checksum).row(1)
        except SourceError as exc:
            assert "changed while it was being imported" in str(exc)
        else:
            raise AssertionError("a changed file was read as the workers read it")


def _reimport(tmp_path: Path, file: Path, batch_size: int, shortcut: bool) -> tuple:
    """The file imported, then imported again: with the fingerprint screen (``shortcut``) this
    process reads the second import's file span by span (``_Import._records_by_span``), without
    it line by line."""
    from crmcore.io import fingerprint

    db = tmp_path / f"re-{batch_size}-{shortcut}.db"
    db.unlink(missing_ok=True)
    crm = open_crm(f"sqlite:///{db}")
    saved = fingerprint.SHORTCUT
    try:
        import_file(crm, "customers", file, ImportOptions(workers=0, batch_size=batch_size, on_error="skip"))
        fingerprint.SHORTCUT = shortcut
        reject = tmp_path / f"re-rejects-{batch_size}-{shortcut}.csv"
        reject.unlink(missing_ok=True)
        report = import_file(crm, "customers", file, ImportOptions(
            workers=0, batch_size=batch_size, on_error="skip", reject_file=reject))
        stored = [(c.external_id, c.name, c.email, c.phone, c.tags) for c in crm.customers.list()]
        return (stored, report.rows, report.inserted, report.updated, report.unchanged, report.rejected,
                report.error_messages(), read_csv(reject) if reject.exists() else None)
    finally:
        fingerprint.SHORTCUT = saved
        crm.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.sampled_from(PIECES), max_size=20), batch_size=st.integers(1, 4), crlf=st.booleans())
def test_a_reimport_read_span_by_span_imports_what_one_reading_imports(tmp_path: Path, lines: list[bytes],
                                                                        batch_size: int, crlf: bool) -> None:
    end = b"\r\n" if crlf else b"\n"
    path = tmp_path / "hostile.csv"
    path.write_bytes(HEADER.replace(b"\n", end) + end.join(line.replace(b"\n", end) for line in lines) + end)
    assert _reimport(tmp_path, path, batch_size, True) == _reimport(tmp_path, path, batch_size, False)


def test_a_csv_from_a_pipe_is_read_once_from_its_start(tmp_path: Path) -> None:
    """A pipe (``crm import customers <(zcat file.gz)``, read as ``/dev/fd/N``) cannot be read in
    spans: the importing process reads it once, from its start, with workers or without, with the
    fingerprint screen on (a plain import by external id)."""
    import os
    import threading

    rows = b"".join(f"C{i},Name {i},u{i}@example.com,,lead,\n".encode() for i in range(30))
    for workers in (None, 0, 2):
        read_end, write_end = os.pipe()

        def feed(fd: int = write_end) -> None:
            with os.fdopen(fd, "wb") as out:
                out.write(HEADER + rows)

        writer = threading.Thread(target=feed)
        writer.start()
        crm = open_crm(f"sqlite:///{tmp_path / f'pipe-{workers}.db'}")
        try:
            report = import_file(crm, "customers", f"/dev/fd/{read_end}",
                                 ImportOptions(workers=workers, batch_size=7, format="csv"))
            assert (report.rows, report.inserted, report.rejected) == (30, 30, 0)
            assert sorted(c.external_id for c in crm.customers.list()) == sorted(f"C{i}" for i in range(30))
        finally:
            writer.join(timeout=10)
            os.close(read_end)
            crm.close()
