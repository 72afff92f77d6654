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
