"""Hostile inputs through the real ``crm`` CLI: how many tracebacks, how many valid rows lost.

Issue 14 asked for counts before and after the hardening: inputs tried,
tracebacks (a "Traceback" in the output or an uncaught exception, i.e. not a
one-line error) and rows lost (for imports under ``--on-error skip``: the valid
rows of the file less the rows that landed).  The corpus covers every category
of the issue: huge, negative and non-ASCII numbers in every integer option,
1e400 / NaN, 23-digit rule constants, NUL bytes, lone surrogates, JSON-path
quotes, 100k-character patterns, deep JSON, 5000-digit integers,
objects/lists/booleans for text fields, future birthdays, CR/LF in names, bad
``crm.toml`` files (binary, a directory, deep nesting, a BOM) and CSV injection
cells.

Each input runs in-process through click's ``CliRunner`` against a fresh SQLite
database, and PostgreSQL / MariaDB when ``CRM_TEST_POSTGRES_URL`` /
``CRM_TEST_MARIADB_URL`` are set (their tables are dropped first).  An input
still running after ``--timeout`` seconds counts as a hang.  Only commands and
options that exist in every version since the hardening started are used, so
the script measures an older checkout too::

    python bench/hostile_inputs.py                 # table per category, then totals
    python bench/hostile_inputs.py --only sqlite --verbose
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, table

# -- the corpus ---------------------------------------------------------------------

HUGE = [str(10**20), str(2**63), str(2**64), str(-(2**63) - 1), "9" * 5000, "-1", "1e400", "NaN", "inf",
        "１２", "1_000", "0x10", "", "1.5", "\x00", "\ud800"]
"""Values for every integer option and argument."""

TEXT = ["a\x00b", "line\nbreak", "car\rriage", "\ud800", "x" * 100_000, "\u2028", "\x1b[31mred", "\x7f",
        "=cmd|' /C calc'!A0", "'; DROP TABLE customers; --"]
"""Values for text fields."""

NUMBERS = ["1e400", "NaN", "-NaN", "inf", str(10**23), "1" * 23, "9" * 5000, "１２３", "1_000", "12.34567",
           "-5", "0x1F", "\x00", "\ud800", ""]
"""Values for money, points and rule constants."""


@dataclass
class Case:
    """One hostile input: CLI arguments, optional files to write, and for imports the valid rows."""

    category: str
    args: list[str]
    files: dict[str, bytes | str | None] = field(default_factory=dict)  # None: a directory
    valid_rows: int = 0  # rows of an import file that must land
    own_dir: bool = False  # run in a directory of its own (its crm.toml)
    db: bool = True  # pass --db


def integer_options() -> Iterator[Case]:
    """Huge, negative, non-ASCII and non-numeric values in every integer option and argument."""
    commands = [
        ["customer", "list", "--limit"], ["customer", "list", "--offset"], ["deal", "list", "--limit"],
        ["deal", "list", "--offset"], ["contact", "list", "--limit"], ["interaction", "list", "--limit"],
        ["customer", "show"], ["deal", "show"], ["contact", "show"], ["interaction", "show"],
        ["customer", "search", "a", "--limit"], ["segment", "runs", "--limit"],
        ["segment", "members", "Other", "--strategy", "rules", "--run"], ["notify", "outbox", "--limit"],
        ["loyalty", "adjust", "1", "--reason", "hostile"],
        ["deal", "move", "STAGE"],  # the id argument
    ]
    for command in commands:
        for value in HUGE:
            if command[-1] == "STAGE":
                yield Case("integer option", ["deal", "move", value, "won"])
            else:
                yield Case("integer option", [*command, value])


def filters() -> Iterator[Case]:
    """--where values and names a database must not see raw."""
    wheres = ["amount>1e400", "amount>NaN", f"amount>{10**20}", f"amount>{'1' * 23}", "amount>0.00001",
              "name=a\x00b", "name=\ud800", 'attributes.a"b=1', "attributes.a'b=1", "attributes.a\\b=1",
              "attributes.$.x=1", "name~" + "a" * 100_000, "name~%_%", "created_at>9999-99-99",
              "birthday>１９９０-01-01", "id=" + "9" * 5000, "amount~1", "nosuchfield=1", "=", "id>>1"]
    for where in wheres:
        entity = "deal" if where.startswith("amount") else "customer"
        yield Case("filter", [entity, "list", "--where", where])


def rules() -> Iterator[Case]:
    """Rule constants and text the rules segmenter must refuse with a column, not a traceback."""
    constants = [str(10**22), "1" * 23, "1e400", "NaN", "9" * 5000, "-" + "9" * 30, "１０", '"\x00"',
                 '"\ud800"', '"' + "a" * 100_000 + '"', "0.000000001", "((((((((((1))))))))))" * 50]
    for constant in constants:
        yield Case("rule constant", ["segment", "run", "rules", "-o", f"rules=Big: total_spend >= {constant}"])
    yield Case("rule constant", ["segment", "run", "rules", "-o", "rules=" + "A: total_spend > 1\n" * 5000])
    yield Case("rule constant", ["segment", "run", "rules", "-o", "rules=\x00: total_spend > 1"])


def text_fields() -> Iterator[Case]:
    """Hostile text, dates and numbers in the add commands."""
    for value in TEXT:
        yield Case("text field", ["customer", "add", "--name", value])
        yield Case("text field", ["customer", "add", "--name", "ok", "--city", value])
        yield Case("text field", ["deal", "add", "--customer", "1", "--title", value, "--amount", "1",
                                  "--stage", "lead"])
        yield Case("text field", ["interaction", "add", "--customer", "1", "--kind", "note", "--subject", value])
    for day in ["2999-01-01", "9999-12-31", "1800-01-01", "2026-02-30", "２０００-01-01", "0000-00-00", "\x00",
                "2000-01-01T00:00:00+99:00", "1" * 30]:
        yield Case("date", ["customer", "add", "--name", "birthday", "--birthday", day])
    for number in NUMBERS:
        yield Case("money", ["deal", "add", "--customer", "1", "--title", "t", "--amount", number,
                             "--stage", "lead"])
    for phone in ["+86 " + "1" * 40, "\x00", "+1 ２１２ 555 0100", "tel:+1-212-555-0100;ext=" + "9" * 5000]:
        yield Case("text field", ["customer", "add", "--name", "phone", "--phone", phone])
    for email in ["a@" + "b" * 300 + ".com", "a\x00@b.com", "\ud800@b.com", "a@b.com\r\nBcc: x@y.com"]:
        yield Case("text field", ["customer", "add", "--name", "mail", "--email", email])


def as_of() -> Iterator[Case]:
    """--as-of values."""
    for value in ["2026-13-45", str(10**30), "NaN", "9999-12-31T99:99", "\ud800", "\x00", "１２", "1e400",
                  "0001-01-01", "-1"]:
        yield Case("as-of", ["--as-of", value, "customer", "list"])
        yield Case("as-of", ["--as-of", value, "report", "run", "pipeline"])


def points() -> Iterator[Case]:
    """Points and rewards through the loyalty commands."""
    for value in NUMBERS:
        yield Case("points", ["loyalty", "redeem", "1", value])
    for value in ["1e400", "NaN", str(2**64), "9" * 5000, "１０"]:
        yield Case("points", ["loyalty", "adjust", "1", value, "--reason", "hostile"])


def report_options() -> Iterator[Case]:
    """Report options with hostile values."""
    for value in ["1e400", "NaN", str(10**30), "\x00", "\ud800", "x" * 100_000, "9999-99-99", "-1"]:
        yield Case("report option", ["report", "run", "win-loss", "--option", f"start={value}"])
        yield Case("report option", ["report", "run", "pipeline", "--option", f"currency={value}"])


def config_files() -> Iterator[Case]:
    """crm.toml files: binary, a directory, deep nesting, a BOM, huge numbers, NUL."""
    files: list[bytes | str | None] = [
        bytes(range(256)) * 4, None, "a = " + "[" * 5000 + "]" * 5000, "\ufeff[notify]\n",
        "\ufeffdatabase_url = 'sqlite:///x.db'\n", b"\xff\xfe\x00\x00garbage", "[[[[", "a = 1e400\n",
        f"[pipelines.default]\nstages = [{'{'}name = 'x', probability = {10**30}{'}'}]\n", "x = '\x00'\n",
        "[segments.rules]\nrules = '" + "A: total_spend > 1\\n" * 2000 + "'\n", "", "[plugins]\nenabled = 5\n",
        '[plugins]\nenabled = ["\\ud800"]\n', "[loyalty.points]\npoints_per_unit = " + "9" * 5000 + "\n",
        "default_currency = 'NaN'\n", "[plugins.loyalty]\n" + "k" * 100_000 + " = 1\n"]
    for body in files:
        yield Case("crm.toml", ["customer", "list"], {"crm.toml": body}, own_dir=True)


def imports() -> Iterator[Case]:
    """Import files with valid rows and one hostile row each, under --on-error skip."""
    def valid(tag: str) -> list[dict[str, str]]:  # emails unique per file: every valid row is a new customer
        return [{"name": f"Valid {n}", "email": f"valid{n}.{tag}@example.com"} for n in range(3)]
    hostile: list[Any] = [
        {"name": {"a": 1}}, {"name": ["a", "b"]}, {"name": True}, {"name": 1.5}, {"name": None},
        {"name": "a\x00b"}, {"name": "\ud800"}, {"name": "x" * 100_000}, {"name": "line\nbreak"},
        {"name": "ok", "birthday": "2999-01-01"}, {"name": "ok", "birthday": "２０００-01-01"},
        {"name": "ok", "id": 10**30}, {"name": "ok", "id": int("9" * 4300)}, {"name": "ok", "id": -1},
        {"name": "ok", "consent_sms": "maybe"}, {"name": "ok", "tags": {"deep": [[[[1]]]]}},
        {"name": "ok", "attributes": json.loads("[" * 900 + "]" * 900)}, {"name": "ok", "stage": "\x00"},
        {"name": "ok", "email": "not an email"}, {"name": "ok", "country": "１２"},
    ]
    for n, row in enumerate(hostile):
        rows = [*valid(f"rows{n}"), row]
        text = "\n".join(json.dumps(r, ensure_ascii=True) for r in rows) + "\n"
        yield Case("import jsonl", ["import", "customers", f"rows{n}.jsonl", "--on-error", "skip",
                                    "--key", "email"], {f"rows{n}.jsonl": text}, valid_rows=3)
    raw = ['{"name": 1e400}', '{"name": NaN}', '{"name": "a"', "[" * 100_000, '{"name": "\\ud800"}',
           '{"id": ' + "9" * 5000 + ', "name": "x"}', "\x00", '"just a string"']
    for n, line in enumerate(raw):
        text = "\n".join(json.dumps(r) for r in valid(f"raw{n}")) + "\n" + line + "\n"
        yield Case("import jsonl", ["import", "customers", f"raw{n}.jsonl", "--on-error", "skip"],
                   {f"raw{n}.jsonl": text}, valid_rows=3)
    # CSV: injection cells are valid names (they must land, quoted on export); the rest are hostile.
    cells = ["=1+2", "+cmd", "-2+3", "@SUM(A1)", '=HYPERLINK("http://x","y")', "=cmd|' /C calc'!A0"]
    for n, cell in enumerate(cells):
        rows = [[f"Valid {k}", f"csv{n}x{k}@example.com"] for k in range(3)] + [[cell, f"inject{n}@example.com"]]
        yield Case("import csv injection", ["import", "customers", f"inj{n}.csv", "--on-error", "skip"],
                   {f"inj{n}.csv": _csv([["name", "email"], *rows])}, valid_rows=4)
    bad_cells = ["a\x00b", "x" * 100_000, "\t=1", "line\r\nbreak", "\ud800"]
    for n, cell in enumerate(bad_cells):
        rows = [[f"Valid {k}", f"bad{n}x{k}@example.com"] for k in range(3)] + [[cell, f"hostile{n}@example.com"]]
        yield Case("import csv", ["import", "customers", f"bad{n}.csv", "--on-error", "skip"],
                   {f"bad{n}.csv": _csv([["name", "email"], *rows])}, valid_rows=3)
    text = "name,email\n" + "".join(f"Valid {k},open{k}@example.com\n" for k in range(3)) + '"unterminated,x\n'
    yield Case("import csv", ["import", "customers", "open.csv", "--on-error", "skip"], {"open.csv": text})
    deals = ["1e400", "NaN", "9" * 5000, "-5", "１２", "12.34567", str(10**23)]
    for n, amount in enumerate(deals):
        # Titles differ per case: a keyless deal equal to a stored one is matched, not inserted again.
        text = "customer_id,title,amount,stage\n" + "".join(f"1,ok {n}.{k},10,lead\n" for k in range(3)) + \
               f"1,hostile,{amount},lead\n" + f"{'9' * 30},bad customer,10,lead\n"
        yield Case("import csv", ["import", "deals", f"deals{n}.csv", "--on-error", "skip"],
                   {f"deals{n}.csv": text}, valid_rows=3)


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def corpus() -> list[Case]:
    """Every hostile input, in a fixed order."""
    return [*integer_options(), *filters(), *rules(), *text_fields(), *as_of(), *points(), *report_options(),
            *config_files(), *imports()]


# -- running ------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one input did."""

    case: Case
    traceback: bool = False
    hang: bool = False
    rows_lost: int = 0
    detail: str = ""


class Timeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise Timeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def prepare_database(url: str) -> None:
    """A migrated, empty database with customer 1 and deal 1 (plugins from entry points)."""
    from crmcore import CRM

    if not url.startswith("sqlite"):
        from crmcore.testing import reset_database

        reset_database(url)
    crm = CRM.open(url)
    try:
        cid = crm.customers.add(name="Seed customer", email="seed@example.com").id
        crm.deals.add(customer_id=cid, title="Seed deal", amount="100", currency="USD", stage="won")
    finally:
        crm.close()


def count_rows(url: str, name: str) -> int:
    from crmcore.store.engine import normalize_url  # the driver crmcore uses for a bare URL

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
    finally:
        engine.dispose()


def write_files(directory: Path, files: dict[str, bytes | str | None]) -> None:
    for name, body in files.items():
        path = directory / name
        if body is None:
            path.mkdir(exist_ok=True)
        elif isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body, encoding="utf-8", errors="surrogatepass")


def run_case(runner: Any, cli: Any, case: Case, url: str, work: Path, timeout: float) -> Outcome:
    """Run one input; a traceback is an uncaught exception or 'Traceback' in the output."""
    directory = work
    if case.own_dir:
        directory = Path(tempfile.mkdtemp(dir=work))
    write_files(directory, case.files)
    entity = case.args[1] if case.args[0] == "import" else None
    before = count_rows(url, entity) if entity else 0
    args = (["--db", url] if case.db else []) + case.args
    old = os.getcwd()
    os.chdir(directory)
    outcome = Outcome(case)
    try:
        with time_limit(timeout):
            result = runner.invoke(cli, args, catch_exceptions=True)
    except Timeout:
        outcome.hang, outcome.detail = True, f"still running after {timeout:.0f} s"
        return outcome
    finally:
        os.chdir(old)
    output = (result.stdout or "") + (getattr(result, "stderr", "") if _stderr_separate(result) else "")
    if isinstance(result.exception, Timeout):  # raised inside the command, caught by the runner
        outcome.hang, outcome.detail = True, f"still running after {timeout:.0f} s"
        return outcome
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        outcome.traceback = True
        outcome.detail = f"{type(result.exception).__name__}: {str(result.exception)[:160]}"
    elif "Traceback" in output:
        outcome.traceback, outcome.detail = True, output.strip().splitlines()[-1][:160]
    if entity:
        landed = count_rows(url, entity) - before
        outcome.rows_lost = max(case.valid_rows - landed, 0)
    return outcome


def _stderr_separate(result: Any) -> bool:
    try:
        return isinstance(result.stderr, str)
    except ValueError:  # click < 8.2 without mix_stderr=False: stderr is in stdout
        return False


def databases(only: str | None) -> dict[str, Callable[[Path], str]]:
    found: dict[str, Callable[[Path], str]] = {"sqlite": lambda work: f"sqlite:///{work / 'hostile.db'}"}
    for name, var in (("postgresql", "CRM_TEST_POSTGRES_URL"), ("mariadb", "CRM_TEST_MARIADB_URL")):
        if os.environ.get(var):
            found[name] = lambda work, url=os.environ[var]: url
    return {k: v for k, v in found.items() if only is None or k == only}


def run(only: str | None = None, timeout: float = 10.0, verbose: bool = False,
        cases: list[Case] | None = None) -> dict[str, list[Outcome]]:
    """Run the corpus on each database; the outcomes per database."""
    from click.testing import CliRunner

    from crmcore.cli import cli

    # The commands see no CRM_* settings of the caller's environment (CliRunner unsets them).
    env: dict[str, str | None] = {v: None for v in os.environ if v.startswith("CRM_")}
    results: dict[str, list[Outcome]] = {}
    for name, url_of in databases(only).items():
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            url = url_of(work)
            prepare_database(url)
            outcomes = []
            for case in cases if cases is not None else corpus():
                outcome = run_case(CliRunner(env=env), cli, case, url, work, timeout)
                if verbose and (outcome.traceback or outcome.hang or outcome.rows_lost):
                    print(f"  {name} {case.category}: {_short(case.args)} -> {outcome.detail or 'rows lost'}",
                          file=sys.stderr)
                outcomes.append(outcome)
            results[name] = outcomes
    return results


def _short(args: list[str]) -> str:
    return " ".join(repr(a) if len(a) < 40 else repr(a[:30]) + f"...({len(a)} chars)" for a in args)


def report(results: dict[str, list[Outcome]]) -> str:
    """A table per database: category, inputs, tracebacks, hangs, rows lost; then totals."""
    lines = []
    for name, outcomes in results.items():
        lines.append(f"{name}")
        lines.append(f"  {'category':<22} {'inputs':>6} {'tracebacks':>10} {'hangs':>6} {'rows lost':>9}")
        by: dict[str, Counter[str]] = {}
        for o in outcomes:
            c = by.setdefault(o.case.category, Counter())
            c["inputs"] += 1
            c["tracebacks"] += o.traceback
            c["hangs"] += o.hang
            c["rows lost"] += o.rows_lost
        total: Counter[str] = Counter()
        for category, c in by.items():
            total.update(c)
            lines.append(f"  {category:<22} {c['inputs']:>6} {c['tracebacks']:>10} {c['hangs']:>6} "
                         f"{c['rows lost']:>9}")
        lines.append(f"  {'total':<22} {total['inputs']:>6} {total['tracebacks']:>10} {total['hangs']:>6} "
                     f"{total['rows lost']:>9}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["sqlite", "postgresql", "mariadb"])
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before an input counts as a hang")
    parser.add_argument("--verbose", action="store_true", help="print each failing input")
    options = parser.parse_args()
    started = time.perf_counter()
    results = run(options.only, options.timeout, options.verbose)
    print(report(results))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
