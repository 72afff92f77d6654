"""A griffe extension for the docs site: Sphinx cross-reference roles as inline code.

The docstrings use Sphinx fields (``:param:``, ``:returns:``), which griffe parses,
and roles such as ``:class:`SegmentRun``` or ``:meth:`~Outbox.enqueue```, which
Markdown would show verbatim.  This turns each role into inline code with the
name (the last component when it starts with ``~``, as Sphinx does).  Loaded by
mkdocstrings (``extensions`` in mkdocs.yml); the code itself is unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def plain(match: re.Match[str]) -> str:
    """The role's target as inline code (``~a.b.c`` shows as ``c``)."""
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrites Sphinx roles in every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(plain, obj.docstring.value)
