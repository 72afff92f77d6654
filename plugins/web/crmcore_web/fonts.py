"""A CJK font for the console's own labels, so Chinese pages read right on a machine without one.

``static/cjk-labels.otf`` holds the glyphs of every non-ASCII character of the Chinese
catalogue (and the language menu), cut from Noto Sans CJK SC (``manimgx-fonts-cjk``, SIL
Open Font License 1.1, which allows redistributing a subset).  ``console.css`` declares it
with a ``unicode-range`` and names it last in the font list, so a system CJK font, when
there is one, still wins.

Customer data (names, notes) can hold any of tens of thousands of characters, so the console
also serves the whole Simplified Chinese face of the installed collection,
``/console/static/cjk-full.otf`` (:func:`full_face`: its tables copied out of the ``.ttc``
byte for byte, about 30 MB, written once to a cache file, never into git), declared with the
same ``unicode-range`` after the label font: a browser fetches it only for a page with a
character the label font lacks, and keeps it (a week's ``Cache-Control``).  The offline
``report dashboard`` page cannot fetch anything, so it embeds a subset of exactly the
characters the page holds (:func:`cut_subset`).

After changing the catalogue, cut the label font again (a test checks it covers every label)::

    python -m crmcore_web.fonts
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

FACE = 2  # the Simplified Chinese face of the collection ("Noto Sans CJK SC")
FONT = "cjk-labels.otf"
#: The whole face, served from the installed package (``full_face``).
FULL = "cjk-full.otf"


#: What Babel's zh_CN dates and times add to the labels (2026年6月30日 下午12:00:00, 星期二).
FORMAT_CHARACTERS = "年月日时分秒上午下午星期周一二三四五六"


def label_characters() -> str:
    """Every non-ASCII character the console's Chinese labels and date formats use."""
    source = resources.files("crmcore_web") / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
    text = source.read_text(encoding="utf-8") + "中文" + FORMAT_CHARACTERS
    return "".join(sorted({c for c in text if ord(c) > 0x7F}))


def collection() -> Path:
    """The installed Noto Sans CJK collection (``manimgx-fonts-cjk``)."""
    import manimgx_fonts_cjk

    return Path(manimgx_fonts_cjk.__file__).with_name("NotoSansCJK-VF.otf.ttc")


def cut_subset(characters: Iterable[str]) -> bytes:
    """A font with the glyphs of ``characters`` (those the face has), cut with fontTools."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(str(collection()), fontNumber=FACE, lazy=True)
    cmap = font.getBestCmap()
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]  # keep the copyright and licence records
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(sorted({c for c in characters if ord(c) in cmap})))
    subsetter.subset(font)
    buffer = io.BytesIO()
    font.save(buffer)
    return buffer.getvalue()


def cut_label_font() -> bytes:
    """The subset font for :func:`label_characters` (needs ``manimgx-fonts-cjk`` and fontTools)."""
    return cut_subset(label_characters())


def extract_face(ttc: bytes, number: int) -> bytes:
    """Face ``number`` of a TrueType/OpenType collection as a standalone font.

    The face's table directory and tables are copied byte for byte (fontTools would decompile
    and rewrite a 30 MB variable CFF2 face, which took minutes here); only the directory's
    offsets and ``head.checkSumAdjustment`` are new.
    """
    if ttc[:4] != b"ttcf":
        raise ValueError("not a font collection")
    faces = struct.unpack_from(">I", ttc, 8)[0]
    if not 0 <= number < faces:
        raise ValueError(f"the collection has {faces} faces, not {number + 1}")
    start = struct.unpack_from(">I", ttc, 12 + 4 * number)[0]
    version, count = struct.unpack_from(">4sH", ttc, start)
    records = [struct.unpack_from(">4sIII", ttc, start + 12 + 16 * i) for i in range(count)]
    offset = 12 + 16 * count
    directory, body = [], []
    for tag, checksum, where, length in sorted(records):
        directory.append((tag, checksum, offset, length))
        data = ttc[where:where + length]
        body.append(data + b"\0" * (-length % 4))
        offset += len(body[-1])
    power = 1 << (count.bit_length() - 1)
    header = struct.pack(">4sHHHH", version, count, power * 16, power.bit_length() - 1, count * 16 - power * 16)
    font = bytearray(header + b"".join(struct.pack(">4sIII", *record) for record in directory) + b"".join(body))
    head = next((where for tag, _, where, _ in directory if tag == b"head"), None)
    if head is not None:  # the whole file's checksum, as the OpenType specification defines it
        struct.pack_into(">I", font, head + 8, 0)
        total = sum(struct.unpack(f">{len(font) // 4}I", bytes(font))) & 0xFFFFFFFF
        struct.pack_into(">I", font, head + 8, (0xB1B0AFBA - total) & 0xFFFFFFFF)
    return bytes(font)


def full_face() -> Path:
    """The Simplified Chinese face as a file: cut from the installed collection on first use into
    a cache file (named after the collection's size and time, so an upgrade cuts it again)."""
    source = collection()
    stat = source.stat()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path(tempfile.gettempdir())) / "crmcore-web"
    target = cache / f"{FULL.removesuffix('.otf')}-{stat.st_size}-{int(stat.st_mtime)}.otf"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(extract_face(source.read_bytes(), FACE))
        partial.replace(target)  # atomic: another worker never serves half a file
    return target


if __name__ == "__main__":
    target = Path(__file__).with_name("static") / FONT
    target.write_bytes(cut_label_font())
    print(f"wrote {target} ({target.stat().st_size:,} bytes, {len(label_characters())} characters)")
