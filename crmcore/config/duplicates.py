"""The ``[duplicates]`` table of ``crm.toml``: how customers are matched, at the door and in bulk.

```toml
[duplicates]
exact = ["email", "phone", "external_id", "attributes.registration_no"]  # the keys that make a match
name_threshold = 0.85      # names at least this alike (0..1) count as the same name
block = ["city"]           # fuzzy candidates share these columns (and their name's first letter)
legal_suffixes = ["控股"]  # more company suffixes to strip, beside 有限公司, Co., Ltd., GmbH, ...
min_score = 0.8            # the default of crm customer duplicates --min-score
merge_score = 0.95         # the default of crm customer merge --all-above
on_add = "refuse"          # a new customer with an exact key of another: refuse | add
on_import = "skip"         # the default of crm import customers --on-duplicate: skip | update | merge | add
merge_rule = "non-empty"   # a field both have: non-empty (the kept one's unless empty) | newest | kept
```

The defaults work on the demo data (no two demo customers share an address or a number).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..domain.errors import ConfigError, unknown_keys
from .checks import table as _table

#: The exact keys a rule may name, beside ``attributes.NAME`` (a custom field).
EXACT_KEYS = ("email", "phone", "external_id")
#: Columns fuzzy candidates may be blocked on.
BLOCK_COLUMNS = ("city", "region", "country", "kind")
ON_ADD = ("refuse", "add")
ON_IMPORT = ("skip", "update", "merge", "add")
MERGE_RULES = ("non-empty", "newest", "kept")


@attrs.frozen
class DuplicateSettings:
    """The ``[duplicates]`` table (see the module documentation for each key)."""

    exact: tuple[str, ...] = EXACT_KEYS
    name_threshold: float = 0.85
    block: tuple[str, ...] = ("city",)
    legal_suffixes: tuple[str, ...] = ()
    min_score: float = 0.8
    merge_score: float = 0.95
    on_add: str = "refuse"
    on_import: str = "skip"
    merge_rule: str = "non-empty"


def parse_duplicates(value: Any, where: str) -> DuplicateSettings:
    """Validate the ``[duplicates]`` table; every error names the file, the table and the key."""
    raw = _table(value, f"{where}: [duplicates]")
    label = f"{where}: [duplicates]"
    known = [f.name for f in attrs.fields(DuplicateSettings)]
    if set(raw) - set(known):
        raise unknown_keys(label, set(raw) - set(known), known)
    kwargs: dict[str, Any] = {}
    if "exact" in raw:
        kwargs["exact"] = _names(raw["exact"], f"{label} exact")
        bad = [k for k in kwargs["exact"] if k not in EXACT_KEYS and not _custom(k)]
        if bad:
            raise ConfigError(f"{label} exact: unknown key(s) {', '.join(map(repr, bad))} "
                              f"(known: {', '.join(EXACT_KEYS)}, attributes.NAME)")
    if "block" in raw:
        kwargs["block"] = _names(raw["block"], f"{label} block")
        bad = [k for k in kwargs["block"] if k not in BLOCK_COLUMNS]
        if bad:
            raise ConfigError(f"{label} block: unknown column(s) {', '.join(map(repr, bad))} "
                              f"(known: {', '.join(BLOCK_COLUMNS)})")
    if "legal_suffixes" in raw:
        kwargs["legal_suffixes"] = _names(raw["legal_suffixes"], f"{label} legal_suffixes")
    for key in ("name_threshold", "min_score", "merge_score"):
        if key in raw:
            number = raw[key]
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number <= 1:
                raise ConfigError(f"{label} {key} must be a number from 0 to 1, got {number!r}")
            kwargs[key] = float(number)
    for key, choices in (("on_add", ON_ADD), ("on_import", ON_IMPORT), ("merge_rule", MERGE_RULES)):
        if key in raw:
            if raw[key] not in choices:
                raise ConfigError(f"{label} {key} must be one of {', '.join(choices)}, got {raw[key]!r}")
            kwargs[key] = raw[key]
    return DuplicateSettings(**kwargs)


def _custom(key: str) -> bool:
    return key.startswith("attributes.") and len(key) > len("attributes.")


def _names(value: Any, label: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{label} must be a list of names, got {value!r}")
    return tuple(value)


def as_mapping(settings: DuplicateSettings) -> Mapping[str, Any]:
    """The settings as a plain table (``crm config show``)."""
    return attrs.asdict(settings)
