"""Match keys and similarity of customers: what makes two records the same person or company.

Pure functions, no database: the duplicates engine (:mod:`crmcore.application.duplicates`)
reads the keys in SQL and scores candidate pairs with them.

* **Exact keys** are compared after normalisation: an email address whatever its case and
  surrounding spaces, a phone number as the E.164 form validation stores (so ``132-9141-7776``,
  ``+86 132 9141 7776`` and full-width ``１３２９１４１７７７６`` are one number), an external id,
  or a custom field such as a company registration number (spaces and dashes ignored, case folded).
* **Fuzzy keys**: names compared with :mod:`rapidfuzz` after Unicode NFKC folding (full-width
  letters are ASCII letters), case folding and, for companies, without legal suffixes
  (``有限公司``, ``Co., Ltd.``, ``GmbH``, ...).  A Chinese name is compared both as characters and as
  pinyin (:mod:`pypinyin`), so ``张伟``, ``Zhang Wei`` and ``Wei Zhang`` are one name.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable


#: Legal-form suffixes stripped from company names before comparing (longest first at use).
LEGAL_SUFFIXES: tuple[str, ...] = (
    "股份有限公司", "有限责任公司", "有限公司", "集团公司", "集团", "公司", "株式会社",
    "co., ltd.", "co.,ltd.", "co. ltd.", "co ltd", "co., ltd", "company limited", "limited", "ltd.", "ltd",
    "inc.", "inc", "incorporated", "corporation", "corp.", "corp", "llc", "l.l.c.", "gmbh", "ag", "s.a.",
    "sa", "s.a.r.l.", "sarl", "b.v.", "bv", "plc", "pte. ltd.", "pte ltd", "oy", "ab", "kg", "spa", "s.p.a.",
    "co.", "co",
)
_SPACES = re.compile(r"\s+")
_PUNCT = re.compile(r"[\s\-_.,()（）·・/&'\"]+")
_HAN = re.compile(r"[\u3400-\u9fff]")
_KEY_NOISE = re.compile(r"[\s\-_./]+")


def fold(text: str | None) -> str:
    """``text`` NFKC-normalised (full-width letters and digits become ASCII), case-folded, with
    runs of spaces made one; empty for None."""
    if not text:
        return ""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def email_key(email: str | None) -> str | None:
    """The exact key of an address: folded (``Zhang.Wei@Example.COM `` is ``zhang.wei@example.com``)."""
    key = fold(email).replace(" ", "")
    return key or None


def code_key(value: object) -> str | None:
    """The exact key of an identifier (a registration number, an external id): folded, without
    spaces, dashes, dots and slashes (``91-3100 00/XY`` is ``913100000xy``)."""
    if value is None:
        return None
    key = _KEY_NOISE.sub("", fold(str(value)))
    return key or None


def strip_legal_suffix(name: str, suffixes: Iterable[str] = LEGAL_SUFFIXES) -> str:
    """A folded company name without its legal-form suffixes (``华为技术有限公司`` -> ``华为技术``,
    ``Acme Trading Co., Ltd.`` -> ``acme trading``); the name itself when nothing else would remain."""
    folded = fold(name)
    ordered = sorted({fold(s) for s in suffixes}, key=len, reverse=True)
    changed = True
    while changed:
        changed = False
        for suffix in ordered:
            if folded.endswith(suffix) and len(folded) > len(suffix):
                rest = folded[: -len(suffix)]
                # A Latin suffix must be a word of its own ("co" in "acme co", not in "disco").
                if not _HAN.search(suffix) and rest and rest[-1].isalnum():
                    continue
                folded = rest.rstrip(" ,.-")
                changed = True
                break
    return folded or fold(name)


@functools.lru_cache(maxsize=65536)
def name_forms(name: str, company: bool = False) -> tuple[str, str]:
    """The two forms a name is compared in: characters (folded, legal suffix stripped for a company,
    punctuation removed) and romanised (Chinese characters as pinyin syllables, words sorted, so
    ``张伟``, ``Zhang Wei`` and ``wei zhang`` have one romanised form)."""
    base = strip_legal_suffix(name) if company else fold(name)
    chars = _PUNCT.sub("", base)
    if _HAN.search(base):
        from pypinyin import lazy_pinyin  # 0.2 s to import (its dictionaries): only when a name needs it

        words = [w for w in lazy_pinyin(base, errors="default") for w in _PUNCT.split(fold(w)) if w]
    else:
        words = [w for w in _PUNCT.split(base) if w]
    return chars, " ".join(sorted(words))


def romanised_initial(name: str, company: bool = False) -> str:
    """The first letter of a name's romanised form (the fuzzy blocking key beside the city)."""
    romanised = name_forms(name, company)[1]
    return romanised[:1] or "?"


def has_han(name: str) -> bool:
    """Whether a name is written (partly) in Chinese characters."""
    return _HAN.search(name) is not None


def name_similarity(a: str, b: str, company: bool = False) -> float:
    """How alike two names are, 0..1: the better of the character and the romanised comparison
    (:func:`rapidfuzz.fuzz.ratio`, and ``token_sort_ratio`` for word order).

    Two names both written in characters are compared as characters only: their pinyin says nothing
    more, and homophones (``王军`` and ``王俊``) are different people.  Pinyin bridges a name in
    characters and one in Latin letters (``张伟`` and ``Zhang Wei``).
    """
    from rapidfuzz import fuzz  # here: only a duplicate search scores names, not every start-up

    a_chars, a_roman = name_forms(a, company)
    b_chars, b_roman = name_forms(b, company)
    if a_chars and a_chars == b_chars:
        return 1.0
    chars = fuzz.ratio(a_chars, b_chars)
    if has_han(a) and has_han(b):
        return chars / 100.0
    return max(chars, fuzz.token_sort_ratio(a_roman, b_roman)) / 100.0
