"""What every command shares: the options, a lazily opened CRM, and output.

A command, the core's or a plugin's, gets the :class:`Session` with
``@crmcore.pass_session`` and uses four things: ``session.crm``,
``session.as_of``, ``session.json`` and ``session.emit(...)``.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import attrs
import click

from ..domain.convert import json_default
from ..domain.errors import CRMError
from ..domain.terminal import print_rows, vertical_table
from ..store.engine import DatabaseMissing
from .masking import mask_text

if TYPE_CHECKING:
    from rich.console import Console

    from ..app import CRM
    from ..config import Config


#: The attribute :func:`read_only` sets on a command.
READ_ONLY = "crm_read_only"

C = TypeVar("C", bound=click.Command)


def read_only(command: C) -> C:
    """Mark a command as only reading: it never creates a database.

    Put it above ``@group.command(...)``.  On a SQLite file that does not
    exist, :attr:`Session.crm` opens the CRM without creating or migrating
    the file; a command that then reads the database gets a one-line error
    suggesting ``crm init``, one that lists components does not notice.
    """
    setattr(command, READ_ONLY, True)
    return command


class UserError(click.ClickException):
    """A CRMError shown as one line, exit code 1."""

    exit_code = 1


class JSONError(click.ClickException):
    """An error under ``--json``: one JSON object on stderr, ``{"error": KIND, "message": TEXT}``."""

    exit_code = 1

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def show(self, file: Any = None) -> None:
        """Print the error object on stderr."""
        click.echo(json.dumps({"error": self.kind, "message": self.message}, ensure_ascii=False), err=True)


class JSONUsageError(JSONError):
    """A usage error under ``--json`` (exit code 2)."""

    exit_code = 2


class CRMGroup(click.Group):
    """Turns :class:`CRMError` into a one-line error (a traceback with ``-v``);
    under ``--json`` every error, usage errors included, is a JSON object on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CRMError as exc:
            session = ctx.obj if isinstance(ctx.obj, Session) else None  # set by the group's callback
            if session is not None and session.verbose:
                raise
            message = mask_text(str(exc))
            if isinstance(exc, DatabaseMissing):
                message += "; create it with `crm init` (or any command that adds data)"
            if session is not None and session.as_json:
                raise JSONError(type(exc).__name__, message) from exc
            raise UserError(message) from exc
        except click.ClickException as exc:
            session = ctx.obj if isinstance(ctx.obj, Session) else None
            if session is None or not session.as_json or isinstance(exc, (JSONError, UserError)):
                raise
            kind = "UsageError" if isinstance(exc, click.UsageError) else type(exc).__name__
            error = JSONUsageError if exc.exit_code == JSONUsageError.exit_code else JSONError
            raise error(kind, mask_text(exc.format_message())) from exc


@attrs.define
class Session:
    """The global options of ``crm`` and the CRM they open (opened on first use).

    What a command, including one a plugin adds with ``register_commands``,
    uses (get the session with ``@crmcore.pass_session``):

    - :attr:`crm`: the :class:`crmcore.CRM` of the database, configuration
      and plugins the user chose, opened on first use.
    - :attr:`as_of`: the instant the command treats as now, an aware UTC
      datetime: the global ``--as-of`` when given, else the current time.
    - :attr:`json`: whether ``--json`` was given.
    - :meth:`emit`: print rows (mappings or attrs objects) as a JSON array
      with ``--json``, a table on a terminal, tab-separated text when piped.
    - :meth:`emit_object`: print one record (a JSON object with ``--json``).
    - :meth:`progress`: a progress bar on stderr for a long command.
    - :meth:`echo`: a line of progress (silenced by ``-q``).

    ``as_of_text`` holds ``--as-of`` as typed (None when absent).  ``console``
    (for tests and embedding) is the terminal tables are drawn on; by default
    a rich console on stdout when stdout is a terminal, else none (piped).
    """

    database_url: str | None = None
    config_file: str | None = None
    plugins: str | None = None
    no_plugins: bool = False
    plugins_dir: str | None = None
    as_of_text: str | None = None
    as_user: str | None = None
    as_json: bool = False
    verbose: int = 0
    quiet: bool = False
    console: Console | None = None
    _crm: CRM | None = None
    _as_of: datetime | None = None
    _zone: tzinfo | None = None
    _acting: Any = None

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> "Session":
        """The plugin-selection options found in raw argv (before click parses)."""
        values: dict[str, Any] = {}
        names = {"--db": "database_url", "--config": "config_file", "--plugins": "plugins",
                 "--plugins-dir": "plugins_dir"}
        args = list(argv)
        for i, arg in enumerate(args):
            if arg == "--":
                break
            flag, eq, value = arg.partition("=")
            if flag in names:
                if eq:
                    values[names[flag]] = value
                elif i + 1 < len(args):
                    values[names[flag]] = args[i + 1]
            elif arg == "--no-plugins":
                values["no_plugins"] = True
            elif arg in ("-v", "--verbose") or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
                values["verbose"] = 1
        return cls(**values)

    def config(self) -> Config:
        """The configuration these options select: ``crm.toml`` (or ``--config``), environment, flags."""
        from ..config import Config

        plugins: list[str] | None = None
        if self.no_plugins:
            plugins = []
        elif self.plugins is not None:
            plugins = [p.strip() for p in self.plugins.split(",") if p.strip()]
        return Config.load(self.config_file, database_url=self.database_url, plugins=plugins,
                           plugins_dir=self.plugins_dir)

    @property
    def crm(self) -> CRM:
        """The :class:`~crmcore.CRM` these options select, opened (and migrated) on first use.

        A command marked :func:`read_only` does not create a missing SQLite
        database (see :func:`read_only`).
        """
        if self._crm is None:
            from ..app import CRM

            context = click.get_current_context(silent=True)
            reading = context is not None and bool(getattr(context.command, READ_ONLY, False))
            self._crm = CRM.open(config=self.config(), create=not reading)
            self._acting = act(self._crm, self.as_user)
            if not self.quiet:
                for failure in self._crm.plugins.failures:
                    click.echo(f"warning: plugin {failure.name!r} failed to load: {failure.error}", err=True)
        return self._crm

    @property
    def as_of(self) -> datetime:
        """The global ``--as-of`` as an aware UTC datetime, or now when it was not given.

        Parsed like every core command parses it (a bare date is the end of that
        day in the configured timezone) and fixed on first use, so one command
        sees one "now".  A bad value is a one-line error.
        """
        if self._as_of is None:
            self._as_of = self.crm.as_of(self.as_of_text)
        return self._as_of

    @property
    def json(self) -> bool:
        """Whether ``--json`` was given (:meth:`emit` honours it already)."""
        return self.as_json

    def close(self) -> None:
        """Close the CRM if this session opened one (the CLI does it when the command ends)."""
        if self._acting is not None:
            self._acting.__exit__(None, None, None)
        if self._crm is not None:
            self._crm.close()

    # -- output ----------------------------------------------------------------
    def emit(self, rows: Iterable[Mapping[str, Any] | Any], columns: Sequence[str] | None = None,
             title: str | None = None) -> None:
        """Print rows: JSON with ``--json``, a rich table on a terminal, tab-separated text when piped.

        JSON and tab-separated text are written row by row, so an iterator of
        rows (``crm customer list --all``) is printed in constant memory.

        :param rows: mappings, or attrs objects (entities, results), one per row.
        :param columns: the columns to show and their order (default: the first
            row's keys); ignored by ``--json``, which prints every key.
        :param title: a title over the terminal table.
        """
        stream = iter(rows)
        if self.as_json:
            click.echo("[", nl=False)
            count = 0
            for count, row in enumerate(stream, 1):
                text = json.dumps(_row(row), ensure_ascii=False, indent=2, default=json_default)
                click.echo(("\n" if count == 1 else ",\n") + textwrap.indent(text, "  "), nl=False)
            click.echo("\n]" if count else "]")
            return
        console = self.terminal()
        if console is None:  # piped: tab-separated, nothing truncated
            first = next(stream, None)
            head = [] if first is None else [_row(first)]
            names = list(columns or (head[0].keys() if head else []))
            click.echo("\t".join(names))
            for row in itertools.chain(head, map(_row, stream)):
                click.echo("\t".join(_text(row.get(c)).replace("\t", " ").replace("\n", " ") for c in names))
            return
        materialised = [_row(row) for row in stream]
        names = list(columns or (materialised[0].keys() if materialised else []))
        print_rows(console, materialised, names, title, self.zone())

    def terminal(self) -> Console | None:
        """The console tables are drawn on, or None when stdout is not a terminal (piped)."""
        if self.console is not None:
            return self.console
        from rich.console import Console  # imported here: JSON and piped output never load rich

        console = Console()  # rich's detection: a tty, or TTY_COMPATIBLE=1 / FORCE_COLOR (width: COLUMNS)
        return console if console.is_terminal else None

    def zone(self) -> tzinfo:
        """The configured timezone (``timezone`` in crm.toml), in which tables show times."""
        if self._zone is None:
            config = self._crm.config if self._crm is not None else self.config()
            self._zone = ZoneInfo(config.timezone)
        return self._zone

    def emit_object(self, record: Mapping[str, Any], message: str | None = None) -> None:
        """Print one record: a JSON object with ``--json``, else ``message`` (when given) or a field/value table."""
        if self.as_json:
            click.echo(json.dumps(dict(record), ensure_ascii=False, indent=2, default=json_default))
        elif message is not None:
            self.echo(message)
        else:
            self.emit_fields(record)

    def emit_one(self, row: Mapping[str, Any] | Any, columns: Sequence[str] | None = None) -> None:
        """Print the one result of an action (a message queued, an entry written, a job's counts):
        a JSON object with ``--json``, else a one-row table like :meth:`emit`'s."""
        if self.as_json:
            self.emit_object(_row(row))
        else:
            self.emit([row], columns=columns)

    def emit_fields(self, record: Mapping[str, Any], title: str | None = None) -> None:
        """Print one record for a person: a field/value table on a terminal, ``field<TAB>value`` lines when piped."""
        console = self.terminal()
        if console is None:
            self.emit([{"field": k, "value": v} for k, v in record.items()], columns=["field", "value"])
        else:
            console.print(vertical_table(record, list(record), self.zone(), title=title))

    def showing(self, shown: int, total: int | None, hint: str = "--limit/--all") -> None:
        """Say on stderr that a listing stopped early: ``showing 100 of 5,000 (use --limit/--all)``.

        Not with ``--json`` (a script asks for what it wants with ``--limit`` or
        ``--all``) nor ``-q``.

        :param total: how many rows match, or None when only "more" is known.
        """
        if self.quiet or self.as_json:
            return
        of = f"more than {shown:,}" if total is None else f"{total:,}"
        click.echo(f"showing {shown:,} of {of} (use {hint})", err=True)

    @contextlib.contextmanager
    def progress(self, label: str) -> Iterator[Callable[..., None]]:
        """A progress bar on stderr while a long command runs (like ``crm import``'s).

        Yields ``update(done, total=None, step="")``.  Drawn only when stderr is
        a terminal, and not with ``--json`` or ``-q``: piped output and
        scripts see nothing of it, and stdout is never touched.
        """
        if self.quiet or self.as_json:  # before rich is imported: scripts never load it
            yield _no_progress
            return
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            yield _no_progress
            return
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        bar = Progress(SpinnerColumn(), TextColumn(f"[bold]{escape(label)}"), TextColumn("{task.description}"),
                       BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        with bar:
            task = bar.add_task("", total=None)

            def update(done: int, total: int | None = None, step: str = "") -> None:
                bar.update(task, completed=done, total=total, description=escape(step))
            yield update

    def echo(self, message: str) -> None:
        """Print a line of progress or summary text, unless ``--quiet`` was given."""
        if not self.quiet:
            click.echo(message)


def act(crm: CRM, login: str | None) -> Any:
    """Enter acting as the command's user: ``--as``, else ``CRM_USER``, else ``default_user``;
    none named: the built-in ``system`` actor, only while the CRM is unconfigured (no user added).
    Returns the entered context (the session exits it when the command ends), or None."""
    login = login or crm.config.default_user
    if login is None:
        try:
            if crm.users.configured():
                raise CRMError("this CRM has users: say who is acting with --as LOGIN, CRM_USER "
                               "or default_user in crm.toml")
        except DatabaseMissing:
            pass  # no database yet: nothing to act on
        return None
    acting = crm.acting(login)
    acting.__enter__()
    return acting


def _row(row: Any) -> dict[str, Any]:
    if attrs.has(type(row)):
        return attrs.asdict(row, recurse=False)
    if isinstance(row, Mapping):
        return dict(row)
    raise TypeError(f"emit() takes mappings or attrs objects, not {type(row).__name__}")


def _no_progress(done: int, total: int | None = None, step: str = "") -> None:
    """Progress when none is drawn."""


def _text(value: Any) -> str:
    """A value in tab-separated output: as JSON writes it, nested values too (never a Python repr)."""
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        sep = "; " if any(isinstance(v, Mapping) for v in value) else ", "
        return sep.join(map(_text, value))
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return str(json_default(value)) if isinstance(value, (Decimal, date, datetime)) else str(value)


pass_session = click.make_pass_decorator(Session)
"""Decorate a click command to receive the :class:`Session` as its first argument
(``from crmcore import pass_session``)."""
