"""Cell values as real exports write them, read before the entity is built.

* dates ``YYYY/M/D``, ``YYYY年M月D日``, ``YYYY.MM.DD`` (a time may follow:
  ``2024/1/2 13:05``) and Excel serial numbers (``45292`` is 2024-01-01;
  ``45292.5`` is noon that day; five digits or more, so a bare year is not a
  serial) for date and time fields;
* money with a currency sign or code (``¥``, ``￥``, ``RMB``, ``CNY``, ``$``,
  ``US$``, ``USD``, ``元``), full-width digits and punctuation
  (``１２，３４５．５０``) and thousands separators (``102,000``; the groups
  must be of three digits, so ``1,02`` stays an error).

What is not recognised is returned unchanged, so the usual parser reports it
(with its usual message).  A mapping file's ``[values.FIELD]`` tables
translate whole cells before any of this (see :mod:`crmcore.io.mapping`).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta
from typing import Any

_EXCEL_EPOCH = datetime(1899, 12, 30)  # serial 1 is 1900-01-01 (Excel counts 1900-02-29, which never was)
_EXCEL_MAX = 2958465  # 9999-12-31
_DATE = re.compile(r"(\d{4})\s*(?:[/.]|年)\s*(\d{1,2})\s*(?:[/.]|月)\s*(\d{1,2})\s*日?"
                   r"(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_SERIAL = re.compile(r"\d{1,7}(?:\.\d+)?")
_CURRENCY = re.compile(r"^(?:US\$|RMB|CNY|USD|[¥$])\s*|\s*(?:元|RMB|CNY|USD)$", re.IGNORECASE)
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def parse_loose_date(text: str, with_time: bool = False) -> Any:
    """A date (or, ``with_time``, a naive datetime) from the forms above; other text unchanged."""
    plain = unicodedata.normalize("NFKC", text).strip()
    match = _DATE.fullmatch(plain)
    if match:
        year, month, day, hour, minute, second = match.groups()
        try:
            moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
        except ValueError:
            return text
        if hour is not None and not with_time:
            return text
        return moment if with_time else moment.date()
    if _SERIAL.fullmatch(plain) and 10000 <= float(plain) <= _EXCEL_MAX:  # 10000 is 1927-05-18
        moment = _EXCEL_EPOCH + timedelta(days=float(plain))
        moment = moment.replace(microsecond=0) + timedelta(seconds=round(moment.microsecond / 1e6))
        return moment if with_time else moment.date()
    return text


def parse_money(text: str) -> str:
    """Amount text without currency signs, full-width characters or thousands separators."""
    plain = _CURRENCY.sub("", unicodedata.normalize("NFKC", text).strip()).strip()
    if _GROUPED.fullmatch(plain):
        return plain.replace(",", "")
    if plain and plain != text.strip() and not any(c == "," for c in plain):
        return plain
    return text


__all__ = ["parse_loose_date", "parse_money"]
