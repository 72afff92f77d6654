"""Row comparison for report tests: exact, except rounded floats (days, hours)."""

from __future__ import annotations

from typing import Any


def same(actual: Any, expected: Any) -> bool:
    if isinstance(actual, float) or isinstance(expected, float):
        if actual is None or expected is None:
            return actual is None and expected is None
        # Both sides round an average to 0.1; float sums in a different order can land either side.
        return abs(actual - expected) <= 0.1 + 1e-9
    return actual == expected


def assert_rows(actual: Any, expected: Any, context: Any = "") -> None:
    actual = [tuple(r) for r in actual]
    expected = [tuple(r) for r in expected]
    assert len(actual) == len(expected), (context, actual, expected)
    for got, want in zip(actual, expected):
        assert len(got) == len(want), (context, got, want)
        assert all(same(a, b) for a, b in zip(got, want)), (context, got, want)
