"""README carries exactly two copy-paste commands, and CI runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("## Two commands", 1)[1]
    section = section.split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_has_exactly_two_one_line_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands)
    assert "crm demo" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = ROOT.joinpath(".ci", "run").read_text(encoding="utf-8").splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]


def test_tour_shows_the_note_a_cut_listing_prints(tmp_path, monkeypatch) -> None:
    """The tour's `customer list --limit 3` ends with the stderr note the command prints."""
    from click.testing import CliRunner

    from crmcore.cli import cli

    tour = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("## A five-minute tour", 1)[1]
    block = tour.split("$ crm customer list ", 1)[1].split("\n\n", 1)[0].splitlines()
    assert re.fullmatch(r"showing 3 of [\d,]+ \(use --limit/--all\)", block[-1]), block
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for name in ("a", "b", "c", "d"):
        assert runner.invoke(cli, ["--no-plugins", "customer", "add", "--name", name]).exit_code == 0
    result = runner.invoke(cli, ["--no-plugins", "customer", "list", "--sort", "-id", "--limit", "3"])
    assert result.stderr == "showing 3 of 4 (use --limit/--all)\n"
    assert len(result.stdout.splitlines()) == 1 + 3
