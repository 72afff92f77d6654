"""How long an SMS is: GSM-7 or UCS-2, and how many segments it takes.

GSM 03.38 (GSM-7) packs 160 septets into one SMS, 153 per segment once the
text needs several (a 7-septet header joins them).  Characters from the
extension table (``€ [ ] { } \\ ~ ^ |``) take two septets.  Anything outside
GSM-7 (Chinese, most emoji) forces UCS-2: 70 UTF-16 code units in one SMS,
67 per segment, and a character outside the Basic Multilingual Plane counts
twice.  The gsm0338 codec decides what fits GSM-7 and how many septets it takes.
"""

from __future__ import annotations

import math

import attrs
import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

LIMITS = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@attrs.frozen
class SmsLength:
    """The encoding, its length in units (septets or UTF-16 code units) and the segments."""

    encoding: str
    units: int
    segments: int


def sms_length(text: str) -> SmsLength:
    """Measure ``text`` as an SMS."""
    try:
        encoding, units = "GSM-7", len(text.encode("gsm03.38"))
    except UnicodeEncodeError:
        encoding, units = "UCS-2", len(text.encode("utf-16-be")) // 2
    single, multi = LIMITS[encoding]
    segments = 1 if units <= single else math.ceil(units / multi)
    return SmsLength(encoding, units, segments)
