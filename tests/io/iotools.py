"""Helpers for the import/export tests: run the real CLI (click's runner or a
subprocess) against a database from crmcore.testing's ``crm_db_url``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from crmcore import CRM
from crmcore.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def write_csv(path: Path, rows: Sequence[Sequence[Any]], encoding: str = "utf-8", delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        csv.writer(fh, delimiter=delimiter).writerows(rows)
    return path


def read_csv(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    with open(path, newline="", encoding=encoding) as fh:
        return list(csv.reader(fh))


class Crm:
    """Run ``crm`` against one database; open it in Python to look inside."""

    def __init__(self, url: str, tmp: Path, config: Path | None = None):
        self.url, self.tmp, self.config = url, tmp, config
        self._opened: list[CRM] = []

    def args(self, *args: str) -> list[str]:
        base = ["--db", self.url, "--no-plugins"]
        if self.config is not None:
            base += ["--config", str(self.config)]
        return base + list(args)

    def run(self, *args: str, input: str | bytes | None = None, ok: bool | None = True) -> Result:
        result = CliRunner().invoke(cli, self.args(*args), input=input, catch_exceptions=False)
        if ok is True:
            assert result.exit_code == 0, result.output + (result.stderr or "")
        elif ok is False:
            assert result.exit_code != 0, result.output
        return result

    def subprocess(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, CRM_PLUGINS="")
        proc = subprocess.run([sys.executable, "-m", "crmcore.cli", *self.args(*args)], capture_output=True,
                              text=True, env=env, cwd=self.tmp)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def open(self) -> CRM:
        from crmcore.config import Config

        if self.config is not None:
            config = Config.load(self.config, database_url=self.url, plugins=[])
        else:
            config = Config.from_mapping({"database_url": self.url, "plugins": []})
        crm = CRM.open(config=config)
        self._opened.append(crm)
        return crm

    def customers(self) -> list[Any]:
        return self.open().customers.list()

    def close(self) -> None:
        for crm in self._opened:
            crm.close()


