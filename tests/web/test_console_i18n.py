"""The web console's Chinese catalogue is complete, and its bundled label font covers it."""

from __future__ import annotations

from pathlib import Path

import crmcore_web
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from crmcore_web import fonts, i18n

PACKAGE = Path(crmcore_web.__file__).parent


def test_every_template_message_has_a_chinese_translation() -> None:
    extracted = {message for _, _, message, _, _ in extract_from_dir(
        str(PACKAGE / "templates"), method_map=[("**.html", "jinja2.ext.babel_extract")],
        options_map={"**.html": {"extensions": "jinja2.ext.i18n"}})}
    with (PACKAGE / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="zh_CN")
    missing = sorted(m for m in extracted if not (catalog.get(m) and catalog.get(m).string))
    assert not missing, f"messages without a zh_CN translation: {missing}"
    assert i18n.translations("zh_CN").gettext("Customers") == "客户"
    assert i18n.pick("zh-CN,zh;q=0.9,en;q=0.8") == "zh_CN" and i18n.pick("fr-FR", None) == "en"
    assert i18n.number(1234567, "zh_CN") == "1,234,567" and i18n.number(1234567, "en") == "1,234,567"


def test_the_label_font_covers_every_chinese_label() -> None:
    ttlib = pytest.importorskip("fontTools.ttLib", reason="fontTools is not installed")
    font = ttlib.TTFont(str(PACKAGE / "static" / fonts.FONT))
    cmap = font.getBestCmap()
    absent = [c for c in fonts.label_characters() if ord(c) not in cmap]
    assert not absent, f"static/{fonts.FONT} lacks {''.join(absent)!r}: run python -m crmcore_web.fonts"


def test_dates_and_times_read_as_babel_formats_them() -> None:
    """``i18n.when`` (patterns parsed once) gives exactly Babel's medium format, per locale and zone."""
    from datetime import date, datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from babel.dates import format_date, format_datetime

    start = datetime(2025, 12, 31, 15, 59, 58, tzinfo=timezone.utc)
    moments = [start + timedelta(hours=7 * n, minutes=n, seconds=n) for n in range(400)]
    for locale in i18n.LOCALES:
        for zone in (None, ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York"), timezone.utc):
            for moment in moments + [moment.replace(tzinfo=None) for moment in moments[:20]]:
                assert i18n.when(moment, locale, zone) == format_datetime(moment, "medium", tzinfo=zone,
                                                                          locale=locale), (locale, zone, moment)
        for day in (date(2026, 1, 1), date(2026, 2, 28), date(2026, 12, 31)):
            assert i18n.when(day, locale) == format_date(day, "medium", locale=locale)
    assert i18n.when(None, "en") == "–"
