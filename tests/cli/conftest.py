"""Shared helpers of the command-line tests."""

from __future__ import annotations

from collections.abc import Callable

import click
import pytest


def _ours(module: str) -> bool:
    """crmcore's own and its first-party plugins' (crmcore_*), not a --plugins-dir file of another test."""
    return module.split(".")[0].startswith("crmcore") and not module.startswith("crmcore_local_plugins")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        if command.callback is not None and not _ours(command.callback.__module__):
            continue
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.fixture
def command_paths() -> Callable[[click.Group], list[tuple[str, ...]]]:
    """``command_paths(cli)``: every command path under a group from crmcore and its plugins
    (a test-only plugin that another test in this process loaded also adds commands; not ours)."""
    return _commands
