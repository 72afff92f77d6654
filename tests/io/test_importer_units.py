"""Small parts of the importer, without a database."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crmcore.io.importer import IdLines

IDS = st.one_of(st.integers(1, 60), st.integers(1, 5_000_000), st.integers(10**12, 10**12 + 5))


@given(st.lists(st.tuples(IDS, st.integers(1, 2**32 - 1)), max_size=80), st.lists(IDS, max_size=20))
def test_id_lines_remembers_the_last_line_of_every_id(marks, probes):
    lines = IdLines()
    expected: dict[int, int] = {}
    for id, line in marks:
        lines.mark(id, line)
        expected[id] = line
    for id in list(expected) + probes:
        assert lines.get(id) == expected.get(id)
    assert len(lines.lines) <= 3 * IdLines.SPAN + 2 * len(marks)  # memory bounded by the span, not the ids
