"""JSON bodies of records, ETags and cursors: one encoding for every route."""

import base64
import binascii
import json
from typing import Any

import orjson
from attrs import AttrsInstance
from starlette.responses import Response

from ..domain.convert import json_default, json_fields, unstructure
from ..domain.errors import ValidationError
from ..domain.versions import version_of


def record(entity: AttrsInstance) -> dict[str, Any]:
    """A record as JSON data: money as exact decimal text, times ISO 8601 UTC, enums by value."""
    data: dict[str, Any] = json.loads(json.dumps(unstructure(entity), default=json_default))
    return data


def fields(entity: AttrsInstance) -> dict[str, Any]:
    """A record's fields for a :class:`JSON` body: the same JSON as :func:`record` once rendered.

    Values stay Python objects (enums, tuples, times, Decimals) until the body is encoded once, by
    orjson, which writes them as :func:`record` does; a page of records pays for no converter.
    """
    return json_fields(entity)


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON (crmcore values encoded as :func:`record` does)."""
    try:
        return orjson.dumps(data, default=json_default, option=_ORJSON_OPTIONS)
    except TypeError:
        # What orjson refuses (an int beyond 64 bits, a lone surrogate) gets json's answer: the
        # same text or the same error as before orjson.
        return json.dumps(data, default=json_default, ensure_ascii=False, separators=(",", ":")).encode()


class JSON(Response):
    """A JSON response encoded with :func:`dumps` (Decimal-safe, compact)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def etag(entity: AttrsInstance) -> str:
    """The strong ETag of a record: its version, quoted."""
    return f'"{version_of(entity)}"'


def if_match_version(header: str | None) -> str | None:
    """The version an ``If-Match`` header asks for (None: no condition, also for ``*``)."""
    if header is None or header.strip() == "*":
        return None
    value = header.split(",")[0].strip().removeprefix("W/")
    return value.strip('"') or None


def encode_cursor(value: Any, id: int) -> str:
    """An opaque cursor for "after the row with this sort value and id"."""
    text = json.dumps([value, id], default=json_default, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, int]:
    """The sort value and id a cursor carries; a damaged cursor is a 422 naming ``cursor``."""
    try:
        value, id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(id, int) or isinstance(id, bool) or not 0 < id < 2**31:
            raise ValueError(id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationError.single("cursor", "not a cursor this API gave out (take it from a page's 'next')") from None
    return value, id
