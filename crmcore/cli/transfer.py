"""``crm import ENTITY FILE`` and ``crm export ENTITY``: files in and out.

The work happens in :mod:`crmcore.io`; these commands parse options, draw a
progress bar on a terminal and print the outcome.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs
import click

from ..domain.errors import CRMError
from ..io import (
    ImportFailed,
    ImportOptions,
    ImportProgress,
    ImportReport,
    export_entities,
    import_file,
    load_mapping_file,
    load_value_mapping,
    parse_map_options,
)
from ..io.mapping import ENTITY_NAMES
from ..io.readers import FORMATS
from ..store.filters import parse_expression
from ..domain.convert import json_default
from .context import Session, pass_session
from .job_cmds import BACKGROUND, submit_background
from .entities import archived_choice, segment_filters
from ..segments.reference import SegmentRef
from .params import COUNT, POSITIVE, SEGMENT

ENTITY = click.Choice(sorted(ENTITY_NAMES), case_sensitive=False)
SHOWN_ERRORS = 20


@click.command("import")
@click.argument("entity", type=ENTITY, metavar="ENTITY")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "format", type=click.Choice(FORMATS), help="File format (default: from the extension).")
@click.option("--encoding", help="Text encoding of a CSV or JSON Lines file (default: UTF-8, BOM or not; "
                                 "e.g. gb18030).")
@click.option("--delimiter", help="CSV delimiter (default: detected from the file).")
@click.option("--sheet", help="XLSX sheet to read (default: the first).")
@click.option("--map", "maps", multiple=True, metavar="COLUMN=FIELD",
              help="Read COLUMN into FIELD (attributes.NAME for a custom field; COLUMN= ignores it). Repeatable.")
@click.option("--mapping", "mapping_file", type=click.Path(exists=True, dir_okay=False),
              help="TOML or JSON file of column = field pairs, and [values.FIELD] tables of cell = value.")
@click.option("--ignore-unknown", is_flag=True, help="Skip columns that match no field instead of failing.")
@click.option("--key", type=click.Choice(["external_id", "email", "id"]),
              help="Match existing records by this field and update them (default: external_id).")
@click.option("--dry-run", is_flag=True, help="Check every row, write nothing, report what would happen.")
@click.option("--on-error", type=click.Choice(["abort", "skip"]), default="abort", show_default=True,
              help="abort: nothing is written if any row is bad; skip: import the good rows, reject the bad.")
@click.option("--reject-file", type=click.Path(dir_okay=False),
              help="Write each rejected row, with its line, column and reason, to this CSV/JSONL/XLSX file.")
@click.option("--batch-size", type=POSITIVE, default=5000, show_default=True,
              help="Rows validated and written together.")
@click.option("--workers", type=COUNT, default=None,
              help="Processes that validate rows (default: one per core but one, at most 4, for a file "
                   "of a few MB or more; 0: validate in this process).")
@click.option("--max-errors", type=POSITIVE, help="Stop reading after this many bad rows.")
@click.option("--raw-csv", is_flag=True, help="Read CSV cells as written (keep a leading ' before =, +, -, @) "
                                             "and write the reject file without formula escaping.")
@click.option("--excel/--no-excel", default=None,
              help="Write a CSV reject file as UTF-8 with a byte order mark, so Excel shows Chinese text "
                   "(default: excel_csv in crm.toml, else off).")
@click.option("--earn/--no-earn", default=True, show_default=True,
              help="Deals: won deals earn loyalty points (--no-earn for history loads).")
@click.option("--allow-duplicates", is_flag=True,
              help="Deals: add rows without external_id even when a stored deal has the same customer, "
                   "title, amount and closed_at (by default such a row is that deal).")
@click.option("--on-duplicate", type=click.Choice(["skip", "update", "merge", "add"]), default=None,
              help="Customers: a new row with a stored customer's email, phone or other exact key is skipped, "
                   "updates that customer, merges into it (fills its empty fields) or is added anyway; each "
                   "is reported with its line (default: [duplicates] on_import, else skip).")
@BACKGROUND
@pass_session
def import_command(session: Session, entity: str, file: str, format: str | None, encoding: str | None,
                   delimiter: str | None, sheet: str | None, maps: tuple[str, ...], mapping_file: str | None,
                   ignore_unknown: bool, key: str | None, dry_run: bool, on_error: str,
                   reject_file: str | None, batch_size: int, workers: int | None,
                   max_errors: int | None, raw_csv: bool = False, excel: bool | None = None, earn: bool = True,
                   allow_duplicates: bool = False, on_duplicate: str | None = None, background: bool = False) -> None:
    """Import ENTITY (customers, contacts, interactions or deals) from FILE: CSV, JSON Lines or XLSX (- for stdin).

    Columns named like fields fill them; --map and --mapping rename the rest.
    Rows whose external id (or --key email / id) already exists update that
    record -- blank cells keep the stored value -- and the others are added.
    Contacts, interactions and deals name their customer in a "customer"
    column (external id, email or id); interactions their contact in "contact".
    Every problem is reported as FILE:LINE: column "NAME": reason.

    \b
    Examples:
      crm import customers customers.csv
      crm import customers leads.csv --map "E-mail=email" --map "Mobile=phone" --key email
      crm import deals deals.xlsx --on-error skip --reject-file rejected.csv
      crm import customers old.csv --encoding gb18030 --dry-run
      crm import deals history.csv --no-earn
      crm import customers /shared/big.csv --background   # a job for `crm worker`; prints its id
    """
    mapping: dict[str, str] = {}
    values: dict[str, dict[str, Any]] = {}
    if mapping_file:
        mapping.update(load_mapping_file(mapping_file))
        values = load_value_mapping(mapping_file)
    mapping.update(parse_map_options(maps))
    options = ImportOptions(format=format, encoding=encoding, delimiter=delimiter, sheet=sheet, mapping=mapping,
                            values=values,
                            ignore_unknown=ignore_unknown, key=key, dry_run=dry_run, on_error=on_error,
                            reject_file=reject_file, batch_size=batch_size, workers=workers,
                            max_errors=max_errors, inputs=(mapping_file,) if mapping_file else (),
                            raw_csv=raw_csv, excel=excel, earn=earn, allow_duplicates=allow_duplicates,
                            on_duplicate=on_duplicate)
    if background:
        submit_background(session, "import", background_import_args(entity, file, options))
        return
    crm = session.crm
    with _ProgressBar(enabled=sys.stderr.isatty() and not session.quiet and not session.as_json and file != "-") as bar:
        try:
            report = import_file(crm, entity, file, options, progress=bar.update)
        except ImportFailed as exc:
            bar.stop()
            _print_report(session, exc.report, summary=False)  # the error message is the summary
            raise
    _print_report(session, report)


def background_import_args(entity: str, file: str, options: ImportOptions) -> dict[str, Any]:
    """The ``import`` job's arguments: the file and every other path made absolute (the worker runs
    elsewhere), the options as plain values.  Standard input and a missing file are refused now."""
    if file == "-":
        raise click.BadParameter("--background reads the file in a worker: give a file, not - (standard input)",
                                 param_hint="FILE")
    path = Path(file).resolve()
    if not path.is_file():
        raise click.BadParameter(f"{file} does not exist (the worker reads it by this path)", param_hint="FILE")
    values = attrs.asdict(options, recurse=False)
    values["reject_file"] = str(Path(options.reject_file).resolve()) if options.reject_file else None
    values["inputs"] = [str(Path(p).resolve()) for p in options.inputs]
    return {"entity": entity, "path": str(path), "options": values}


def _print_report(session: Session, report: ImportReport, summary: bool = True) -> None:
    if session.as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2, default=json_default))
        return
    for message in report.error_messages(SHOWN_ERRORS):
        click.echo(message, err=True)
    if report.rejected > SHOWN_ERRORS:
        more = f"... and {report.rejected - SHOWN_ERRORS} more"
        if report.reject_file:
            more += f" (all in {report.reject_file})"
        click.echo(more, err=True)
    for message in report.duplicate_messages(SHOWN_ERRORS):
        click.echo(message, err=True)
    if len(report.duplicates) > SHOWN_ERRORS:
        click.echo(f"... and {len(report.duplicates) - SHOWN_ERRORS} more duplicate rows (--json lists them)", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if summary and (report.committed or report.dry_run):
        session.echo(report.summary())


@click.command("export")
@click.argument("entity", type=ENTITY, metavar="ENTITY")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write to FILE (default: standard output).")
@click.option("--format", "format", type=click.Choice(FORMATS),
              help="csv, jsonl or xlsx (default: from the output's extension, else csv).")
@click.option("--where", "where", multiple=True, metavar="EXPR",
              help="Filter: FIELD=VALUE, !=, >=, <=, >, <, ~ (contains); attributes.NAME for custom fields.")
@click.option("--sort", default="id", show_default=True, help="Sort by FIELD (-FIELD for descending).")
@click.option("--limit", type=COUNT, help="At most this many rows.")
@click.option("--encoding", help="Text encoding for CSV/JSONL (default: utf-8; gb18030 ...).")
@click.option("--excel/--no-excel", default=None,
              help="CSV for Excel: UTF-8 with a byte order mark, so Chinese text shows correctly "
                   "(default: excel_csv in crm.toml, else off).")
@click.option("--delimiter", default=",", show_default=True, help="CSV delimiter.")
@click.option("--segment", "segment", multiple=True, type=SEGMENT, metavar="[STRATEGY:]SEGMENT",
              help="Customers only: those in SEGMENT of the latest run of its strategy (repeatable).")
@click.option("--raw-csv", is_flag=True, help="CSV for programs: no quote before text starting with =, +, -, @ "
                                             "(by default such text is escaped so spreadsheets do not run it).")
@click.option("--archived", "only_archived", is_flag=True,
              help="Only archived records (for contacts, interactions and deals: also those of archived customers).")
@click.option("--include-archived", "include_archived", is_flag=True, help="Archived records too.")
@pass_session
def export_command(session: Session, entity: str, output: str | None, format: str | None,
                   where: tuple[str, ...], sort: str, limit: int | None, encoding: str | None, delimiter: str,
                   segment: tuple[SegmentRef, ...] = (), raw_csv: bool = False, excel: bool | None = None,
                   only_archived: bool = False, include_archived: bool = False) -> None:
    """Export ENTITY (customers, contacts, interactions or deals) to CSV, JSON Lines or XLSX.

    The file imports back as it is: `crm import ENTITY FILE` into another
    database recreates every field (links to customers by external id or email).
    Archived records are left out unless --archived or --include-archived.

    \b
    Examples:
      crm export customers -o customers.csv
      crm export deals --where stage=won --sort -amount -o won.xlsx
      crm export interactions --format jsonl > interactions.jsonl
      crm export customers --segment "rfm:At Risk" -o at-risk.csv
      crm export customers --excel -o customers.csv
    """
    filters = dict(parse_expression(w) for w in where)
    archived = archived_choice(only_archived, include_archived)
    if segment:
        if ENTITY_NAMES[entity.lower()] != "customer":
            raise CRMError(f"--segment filters customers, not {entity}")
        filters |= segment_filters(session, segment)
    if format is None and session.as_json and output in (None, "-"):
        format = "jsonl"
    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    if len(delimiter) != 1:
        raise CRMError(f"--delimiter must be one character, got {delimiter!r}")
    with session.progress(f"exporting {entity}") as progress:
        if output in (None, "-"):  # stdout is the file: nothing to count, nothing drawn over it
            total = None
        else:  # the bar needs a total: one COUNT, cheap next to writing the rows
            total = getattr(session.crm, f"{ENTITY_NAMES[entity.lower()]}s").count(filters, archived=archived)
            total = total if limit is None else min(total, limit)
        report = export_entities(session.crm, entity, output, format=format, filters=filters, sort=sort,
                                 limit=limit, encoding=encoding, delimiter=delimiter, raw_csv=raw_csv, excel=excel,
                                 progress=lambda rows: progress(rows, total), archived=archived)
    if output not in (None, "-") and not session.quiet:
        click.echo(f"exported {report.rows} {report.entity}s to {output} ({report.format})", err=True)


class _ProgressBar:
    """A rich progress bar on stderr (only on a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> "_ProgressBar":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("[bold]importing"), BarColumn(), DownloadColumn(),
                                     TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn(),
                                     TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.progress.start()
            self.task = self.progress.add_task("import", total=None, rows=0)
        return self

    def update(self, state: ImportProgress) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.bytes_read, total=state.total_bytes, rows=state.rows)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __exit__(self, *exc: Any) -> None:
        self.stop()
