"""The CJK font bundled with ``manimgx-fonts-cjk`` (Noto Sans CJK, OFL), for charts and pages.

Charts draw text as outlines from it (see :mod:`crmcore_reports.charts`);
HTML pages embed a subset of it holding just the characters the page uses
(an ``@font-face`` with a ``data:`` URL, about 1 KB per character), so table
cells in Chinese read right on a machine with no CJK font installed, offline.
"""

from __future__ import annotations

import base64
import functools
import io
from pathlib import Path

FACE = 2  # the Simplified Chinese face of the collection ("Noto Sans CJK SC")
FAMILY = "Noto Sans CJK SC"


def cjk_font_path() -> Path | None:
    """The bundled collection file, or None when the font distribution is not installed."""
    try:
        import manimgx_fonts_cjk
    except ImportError:
        return None
    path = Path(manimgx_fonts_cjk.__file__).with_name("NotoSansCJK-VF.otf.ttc")
    return path if path.exists() else None


def embedded_font_css(text: str, family: str = "CRM CJK") -> str:
    """An ``@font-face`` rule embedding the CJK font's glyphs for the non-ASCII characters of ``text``.

    Empty when the text is plain ASCII or the font is not installed.
    """
    wanted = "".join(sorted({c for c in text if ord(c) > 0x7F}))
    if not wanted or cjk_font_path() is None:
        return ""
    data = _subset(wanted)
    if not data:
        return ""
    encoded = base64.b64encode(data).decode("ascii")
    # A variable font: one face covers every weight, so bold headers stay bold.
    return (f'@font-face {{ font-family: "{family}"; font-weight: 100 900; font-display: block; '
            f'src: url(data:font/otf;base64,{encoded}) format("opentype"); }}')


@functools.lru_cache(maxsize=64)
def _subset(characters: str) -> bytes:
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(str(cjk_font_path()), fontNumber=FACE, lazy=True)
    cmap = font.getBestCmap()
    present = "".join(c for c in characters if ord(c) in cmap)
    if not present:
        return b""
    options = subset.Options()
    options.layout_features = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=present)
    subsetter.subset(font)
    buffer = io.BytesIO()
    font.save(buffer)
    return buffer.getvalue()
