"""What a text field may contain: the door for control characters.

A one-line field (a name, an email address, a subject, a city, a tag, an
external id, ...) refuses every C0 and C1 control character (CR, LF, TAB and
NUL included), DEL, the Unicode line and paragraph separators and lone
surrogates: a line break in a name ends up in a mail header, NUL is refused by
PostgreSQL, a lone surrogate cannot be encoded.  A multi-line field (an
interaction's body, a text custom field) keeps LF and TAB, stores CR LF and a
lone CR as LF, and refuses the rest.  Nothing is stripped silently.
"""

from __future__ import annotations

import re

#: Characters a one-line field refuses.
ONE_LINE_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: Characters a multi-line field refuses (after :func:`normalise_newlines`).
MULTI_LINE_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

_NAMES = {"\n": "line feed", "\r": "carriage return", "\t": "tab", "\x00": "NUL", "\x1b": "escape",
          "\x7f": "delete", "\x85": "next line", "\u2028": "line separator", "\u2029": "paragraph separator",
          "\x0b": "vertical tab", "\x0c": "form feed", "\x08": "backspace"}


def describe_character(char: str) -> str:
    """``a control character U+000A (line feed)``, ``a lone surrogate U+D800``."""
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate U+{code:04X} (not valid Unicode)"
    name = _NAMES.get(char)
    kind = "a line break" if char in "\u2028\u2029" else "a control character"
    return f"{kind} U+{code:04X}" + (f" ({name})" if name else "")


def text_problem(value: str, multiline: bool = False) -> str | None:
    """Why ``value`` may not be stored in a one-line (or multi-line) field, or None.

    For a multi-line field, normalise the line ends first (:func:`normalise_newlines`).
    """
    match = (MULTI_LINE_FORBIDDEN if multiline else ONE_LINE_FORBIDDEN).search(value)
    if match is None:
        return None
    where = f"at character {match.start() + 1}"
    rule = "only line feeds and tabs are allowed" if multiline else "the field holds one line"
    return f"contains {describe_character(match.group())} {where}; {rule}"


def normalise_newlines(value: str) -> str:
    """CR LF and lone CR as LF (the one line end a multi-line field stores)."""
    if "\r" not in value:
        return value
    return value.replace("\r\n", "\n").replace("\r", "\n")


def check_text(value: str, multiline: bool = False) -> str:
    """``value`` as stored (line ends normalised in a multi-line field), or ``ValueError``."""
    if multiline:
        value = normalise_newlines(value)
    problem = text_problem(value, multiline)
    if problem is not None:
        raise ValueError(problem)
    return value
