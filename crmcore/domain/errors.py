"""Errors a person can act on.

Every user error is a :class:`CRMError`; the CLI prints its message on one line
and exits non-zero without a traceback.  Anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any


class CRMError(Exception):
    """Base class of every error caused by input, configuration or a plugin."""


class ValidationError(CRMError):
    """One or more fields of an entity are invalid.

    ``issues`` holds ``(field, message)`` pairs so callers (imports, forms) can
    point at the exact column.
    """

    def __init__(self, issues: Sequence[tuple[str, str]], entity: str | None = None):
        self.issues = list(issues)
        self.entity = entity
        what = f"invalid {entity}: " if entity else "invalid input: "
        super().__init__(what + "; ".join(f"{field}: {msg}" for field, msg in self.issues))

    @classmethod
    def single(cls, field: str, message: str, entity: str | None = None) -> "ValidationError":
        """A ValidationError with one issue: ``field`` of ``entity`` and what is wrong with it."""
        return cls([(field, message)], entity)


class NotFound(CRMError):
    """A referenced record does not exist."""

    def __init__(self, kind: str, key: object):
        self.kind, self.key = kind, key
        super().__init__(f"{kind} {key!r} not found")


class ConfigError(CRMError):
    """The configuration (crm.toml, environment, flags) is invalid."""


class PluginError(CRMError):
    """A plugin could not be loaded, clashes with another, or misbehaved."""


class HookError(PluginError):
    """A plugin's hook implementation raised; names the plugin and the hook."""

    def __init__(self, plugin: str, hook: str, error: BaseException):
        self.plugin, self.hook, self.error = plugin, hook, error
        super().__init__(f"plugin {plugin!r} failed in hook {hook!r}: {error}")


class UnknownComponent(CRMError):
    """A segmenter, scheme, channel, report or renderer name is not registered."""

    def __init__(self, kind: str, name: str, known: Sequence[str]):
        self.kind, self.name = kind, name
        listing = ", ".join(sorted(known)) or "none registered"
        super().__init__(f"unknown {kind} {name!r} (known: {listing})")


class NotAuthorized(CRMError):
    """The ``authorize`` hook refused an action for the acting user."""

    def __init__(self, actor: str | None, action: str, resource: object = None):
        self.actor, self.action, self.resource = actor, action, resource
        # One line naming the user, the action and the record (when there is one).
        record = "" if resource is None else f" ({_record_label(resource)})"
        super().__init__(f"user {actor or 'anonymous'!r} may not {action}{record}")


def _record_label(resource: object) -> str:
    """A short name for the record an action is about: ``customer 7``, a name, or ids."""
    kind, ident = type(resource).__name__.lower(), getattr(resource, "id", None)
    if isinstance(resource, (str, int)):
        return str(resource)
    if isinstance(resource, (list, tuple)):
        return ", ".join(str(r) for r in resource[:5]) + (" ..." if len(resource) > 5 else "")
    return f"{kind} {ident}" if ident is not None else f"new {kind}"


class InsufficientPoints(CRMError):
    """A redemption asked for more points than the balance holds."""

    def __init__(self, customer_id: int, scheme: str, requested: int, available: int):
        self.customer_id, self.scheme = customer_id, scheme
        self.requested, self.available = requested, available
        super().__init__(
            f"customer {customer_id} has {available} {scheme} points; cannot redeem {requested}"
        )


class HasHistory(CRMError):
    """A purge refused because the record has history that must outlive it.

    Loyalty ledger entries, outbox messages, consent decisions and won deals are
    history: removing their customer (or deal) would rewrite past reports and
    balances, so the record can only be archived (``delete`` without ``purge``).
    """

    def __init__(self, kind: str, id: int | None, history: Sequence[str]):
        self.kind, self.id, self.history = kind, id, tuple(history)
        super().__init__(f"{kind} {id} has history ({', '.join(history)}) and cannot be purged: "
                         f"it can only be archived (deletes never rewrite history)")


class RecordArchived(CRMError):
    """A write refused because of a record's archived state.

    Updating (or moving, importing over, adding to) an archived customer or
    deal is refused until it is restored; archiving an archived record, or
    restoring a live one, is refused too.
    """

    def __init__(self, kind: str, id: int | None, message: str):
        self.kind, self.id = kind, id
        super().__init__(f"{kind} {id} {message}")


class StaleVersion(CRMError):
    """A change made "if the record is still at version V" found another version: someone
    changed the record since it was read.  Nothing was written; read it again and retry."""

    def __init__(self, kind: str, id: object, expected: str, current: str):
        self.kind, self.id, self.expected, self.current = kind, id, expected, current
        super().__init__(f"{kind} {id} changed since it was read (version {expected}, now {current}): "
                         f"read it again and reapply the change")


class DuplicateCustomer(CRMError):
    """A new customer looks like stored ones: they share an exact key (``[duplicates] exact``).

    ``matches`` holds the :class:`crmcore.application.duplicates.Match` objects (id, name, the
    keys shared; a customer the acting user cannot see has no id and no name).  A bulk add
    (``add_many``) names the ``row`` (0-based), and ``same_as_row`` when the row repeats an
    earlier row of the batch.  Nothing was written; add it anyway with ``on_duplicate="add"``
    (``--on-duplicate add``), or merge afterwards.
    """

    def __init__(self, matches: Sequence[Any], row: int | None = None, same_as_row: int | None = None):
        self.matches, self.row, self.same_as_row = tuple(matches), row, same_as_row
        seen = [m.describe() for m in self.matches if m.customer_id is not None]
        parts = []
        if seen:
            more = f" and {len(seen) - 3} more" if len(seen) > 3 else ""
            parts.append("looks like " + "; ".join(seen[:3]) + more)
        # A customer the acting user cannot see: no id, no name, only which keys (Match.describe).
        parts += [m.describe() for m in self.matches if m.customer_id is None]
        if same_as_row is not None:
            parts.append(f"looks like row {same_as_row} of this batch")
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{where}{'; and '.join(parts)}: not added (add it anyway with --on-duplicate add, "
                         f"or update that customer)")


class MergeRefused(CRMError):
    """A merge or an unmerge that cannot be done as asked (says which customers and why)."""


def unknown_keys(where: str, keys: Iterable[str], allowed: Iterable[str], label: str = "key(s)") -> ConfigError:
    """A :class:`ConfigError` for keys a configuration table does not know::

        crm.toml: [pipelines.default] unknown key(s): stage (did you mean 'stages'?); known: stages

    ``where`` names the file and table (``crm.toml: [pipelines.default]``); each
    key gets a "did you mean" suggestion when one of ``allowed`` is close.
    """
    known = sorted(allowed)
    parts = []
    for key in sorted(keys):
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(key + (f" (did you mean {close[0]!r}?)" if close else ""))
    listing = f"; known: {', '.join(known)}" if known else ""
    return ConfigError(f"{where} unknown {label}: {', '.join(parts)}{listing}")
