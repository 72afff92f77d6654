"""Named RFM segments: which (R, F, M) cells get which name.

The rule works on two axes, as the usual RFM segment maps do:

* ``R`` - the recency score (1-5);
* ``FM`` - frequency and monetary together: ``FM = (F + M) // 2`` (the mean,
  rounded down, so a customer needs both to be high to score high).

Rules, first match wins::

    Champions           R >= 4 and FM >= 4
    Loyal               R >= 4 and FM == 3,  or  R == 3 and FM >= 4
    Potential Loyalist  R >= 4 and FM == 2
    New                 R == 5 and FM == 1
    Promising           R == 4 and FM == 1
    Need Attention      R == 3 and FM == 3
    About to Sleep      R == 3 and FM <= 2
    Can't Lose          R == 1 and FM >= 4
    At Risk             R <= 2 and FM >= 3
    Hibernating         R == 2 and FM <= 2
    Lost                R == 1 and FM <= 2

As a grid (rows R, columns FM)::

           FM=1            2                   3               4            5
    R=5    New             Potential Loyalist  Loyal           Champions    Champions
    R=4    Promising       Potential Loyalist  Loyal           Champions    Champions
    R=3    About to Sleep  About to Sleep      Need Attention  Loyal        Loyal
    R=2    Hibernating     Hibernating         At Risk         At Risk      At Risk
    R=1    Lost            Lost                At Risk         Can't Lose   Can't Lose

Customers without a won deal up to ``as_of`` are :data:`NO_PURCHASES`.
"""

from __future__ import annotations

from typing import Any

NO_PURCHASES = "No purchases"

SEGMENTS = (
    "Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Need Attention",
    "About to Sleep", "Can't Lose", "At Risk", "Hibernating", "Lost",
)


def segment_for(r: int, f: int, m: int) -> str:
    """The named segment of an RFM cell (scores 1-5 each)."""
    for score in (r, f, m):
        if not 1 <= score <= 5:
            raise ValueError(f"RFM scores are 1-5, got {(r, f, m)}")
    fm = (f + m) // 2
    if r >= 4 and fm >= 4:
        return "Champions"
    if (r >= 4 and fm == 3) or (r == 3 and fm >= 4):
        return "Loyal"
    if r >= 4 and fm == 2:
        return "Potential Loyalist"
    if r == 5:
        return "New"
    if r == 4:
        return "Promising"
    if r == 3:
        return "Need Attention" if fm == 3 else "About to Sleep"
    if r == 1 and fm >= 4:
        return "Can't Lose"
    if fm >= 3:
        return "At Risk"
    return "Hibernating" if r == 2 else "Lost"


# The grid above as data: R (as text, TOML keys are strings) -> names for FM = 1..5.
DEFAULT_GRID: dict[str, tuple[str, ...]] = {
    str(r): tuple(segment_for(r, fm, fm) for fm in range(1, 6))
    for r in range(5, 0, -1)
}


def check_grid(grid: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """A segment grid from configuration: keys "1".."5" (R), five names each (FM = 1..5)."""
    if not isinstance(grid, dict):
        raise ValueError(f"the grid is a table of R -> five segment names, got {grid!r}")
    keys = {str(k) for k in grid}
    if keys != {"1", "2", "3", "4", "5"}:
        raise ValueError(f"the grid needs exactly the rows 1-5 (R scores), got {sorted(keys)}")
    checked = {}
    for key, names in grid.items():
        if isinstance(names, str) or len(names) != 5 or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"row {key} must list five segment names (FM = 1..5), got {names!r}")
        checked[str(key)] = tuple(n.strip() for n in names)
    return checked


def segment_by_key(grid: dict[str, tuple[str, ...]] | None = None) -> dict[int, str]:
    """The grid tabulated by ``R * 100 + F + M`` (what the SQL CASE matches).

    ``F + M`` alone decides ``FM``, so 5 x 9 keys cover all 125 cells.
    """
    grid = grid or DEFAULT_GRID
    return {r * 100 + fm_sum: grid[str(r)][fm_sum // 2 - 1] for r in range(1, 6) for fm_sum in range(2, 11)}
