"""Small parts of the importer, without a database."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crmcore.io.importer import IdLines, _comparable, _each_comparable
from crmcore.store.tables import customers

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


@given(st.lists(st.one_of(st.text(), st.text(alphabet=st.characters(max_codepoint=127)),
                          st.integers(-(2**70), 2**70)), max_size=30),
       st.sampled_from(["external_id", "id"]))
def test_comparable_keeps_what_the_value_by_value_check_keeps(values, name):
    column = customers.c[name]
    for given_as in (list(values), tuple(values), set(values)):
        assert sorted(_comparable(column, given_as), key=str) == sorted(_each_comparable(column, given_as), key=str)


def test_mark_many_is_mark_of_each():
    runs = [([5, 6, 7], [10, 11, 12]), ([8, 9], [13, 14]), ([3, 4, 5], [1, 2, 3]), ([100, 2], [7, 8]),
            ([], []), ([10**12, 10**12 + 1], [5, 6]), ([1, 2], [9, 9])]
    one, many = IdLines(), IdLines()
    for ids, lines in runs:
        for id, line in zip(ids, lines):
            one.mark(id, line)
        many.mark_many(ids, lines)
    for id in list(range(0, 120)) + [10**12, 10**12 + 1, 10**12 + 2]:
        assert one.get(id) == many.get(id)
