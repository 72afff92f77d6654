"""Record versions: what an ``ETag`` carries and ``If-Match`` checks.

A version is a hash over every stored field of a record (its ``updated_at``
included), so any write makes a new one and two reads of an unchanged record
give the same.  A client that read version V and sends a change "if still V"
(:meth:`crmcore.application.services.EntityService.update_if`) gets
:class:`~crmcore.domain.errors.StaleVersion` instead of overwriting a change
it never saw.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson
from attrs import AttrsInstance

from .convert import json_default, json_fields


def version_of(entity: AttrsInstance) -> str:
    """The version of a stored record: 20 hex characters of a SHA-256 over its fields."""
    return version_of_data(json_fields(entity))  # the same JSON as unstructure's, without cattrs


def version_of_data(data: Mapping[str, Any]) -> str:
    """:func:`version_of` for a record given as its fields (also as JSON data: the same version)."""
    try:
        text = orjson.dumps(data, default=json_default, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses (an int beyond 64 bits, a lone surrogate): json's text
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=json_default,
                          ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:20]
