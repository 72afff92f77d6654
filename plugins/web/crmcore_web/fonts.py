"""A CJK font for the console's own labels, so Chinese pages read right on a machine without one.

``static/cjk-labels.otf`` holds the glyphs of every non-ASCII character of the Chinese
catalogue (and the language menu), cut from Noto Sans CJK SC (``manimgx-fonts-cjk``, SIL
Open Font License 1.1, which allows redistributing a subset).  ``console.css`` declares it
with a ``unicode-range`` and names it last in the font list, so a system CJK font, when
there is one, still wins.  Customer data in Chinese uses the system's fonts.

After changing the catalogue, cut it again (a test checks it covers every label)::

    python -m crmcore_web.fonts
"""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

FACE = 2  # the Simplified Chinese face of the collection ("Noto Sans CJK SC")
FONT = "cjk-labels.otf"


#: What Babel's zh_CN dates and times add to the labels (2026年6月30日 下午12:00:00, 星期二).
FORMAT_CHARACTERS = "年月日时分秒上午下午星期周一二三四五六"


def label_characters() -> str:
    """Every non-ASCII character the console's Chinese labels and date formats use."""
    source = resources.files("crmcore_web") / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
    text = source.read_text(encoding="utf-8") + "中文" + FORMAT_CHARACTERS
    return "".join(sorted({c for c in text if ord(c) > 0x7F}))


def cut_label_font() -> bytes:
    """The subset font for :func:`label_characters` (needs ``manimgx-fonts-cjk`` and fontTools)."""
    import manimgx_fonts_cjk
    from fontTools import subset
    from fontTools.ttLib import TTFont

    path = Path(manimgx_fonts_cjk.__file__).with_name("NotoSansCJK-VF.otf.ttc")
    font = TTFont(str(path), fontNumber=FACE, lazy=True)
    cmap = font.getBestCmap()
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]  # keep the copyright and licence records
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(c for c in label_characters() if ord(c) in cmap))
    subsetter.subset(font)
    buffer = io.BytesIO()
    font.save(buffer)
    return buffer.getvalue()


if __name__ == "__main__":
    target = Path(__file__).with_name("static") / FONT
    target.write_bytes(cut_label_font())
    print(f"wrote {target} ({target.stat().st_size:,} bytes, {len(label_characters())} characters)")
