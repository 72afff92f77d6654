"""The static ``crm report dashboard`` index: the console's dashboard as one offline HTML file.

``crm report dashboard --output DIR`` writes every report's page, then asks the
``render_dashboard`` hook for ``index.html``: this plugin answers with the console's
dashboard (the same tiles and charts, :mod:`crmcore_web.views`) as of the export's moment,
with links to the report pages.  The file needs no server and no network: the stylesheet,
a font with exactly the CJK characters the page holds (labels and data alike, cut with
fontTools from the installed face: :func:`crmcore_web.fonts.cut_subset`, base64),
plotly.min.js from the installed ``plotly`` package and the console's chart code are inlined
(about 5 MB, nearly all plotly).
"""

from __future__ import annotations

import base64
import importlib.util
import re
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

import crmcore

from . import i18n, views
from .fonts import FONT, cut_subset
from .rendering import environment

if TYPE_CHECKING:
    from crmcore import CRM


def plotly_js() -> str:
    """plotly.min.js from the installed plotly package (found, not imported: importing costs a second)."""
    spec = importlib.util.find_spec("plotly")
    assert spec is not None and spec.origin is not None, "plotly is a dependency of crmcore-web"
    return (Path(spec.origin).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


def _static(name: str) -> bytes:
    return (resources.files("crmcore_web") / "static" / name).read_bytes()


def inline_script(text: str) -> Markup:
    """``text`` safe inside a ``<script>`` element (a closing tag in it would end the element early)."""
    if "</script" in text.lower():
        raise ValueError("a script to inline contains </script")
    return Markup(text)


#: The export names the label font first (for CJK only: its unicode-range): Chromium left the text
#: laid out before an embedded (data: URL) font finished loading in its fallback boxes when the
#: font came last, and the few characters the subset lacks still fall through to system fonts.
FONT_FIRST = ('body { font-family: "CRM CJK", system-ui, -apple-system, "Segoe UI", "Noto Sans", '
              '"PingFang SC", "Microsoft YaHei", sans-serif; }')


#: The characters the CJK @font-face rules cover (their ``unicode-range`` in console.css).
CJK = re.compile("[\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f]")
#: The whole face's rule: a file to fetch, which an offline page cannot.
FULL_FACE_RULE = re.compile(r'@font-face \{ font-family: "CRM CJK Full";[^}]*\}\n?')


def page_characters(text: str) -> set[str]:
    """The CJK characters of a page, also those written as ``\\uXXXX`` in its JSON (chart data)."""
    unescaped = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    return set(CJK.findall(unescaped))


#: The label font's rule in console.css (left out of a page without CJK characters).
LABEL_FACE_RULE = re.compile(r'@font-face \{ font-family: "CRM CJK";[^}]*\}\n?')


def inline_css(font: bytes | None) -> Markup:
    """console.css with ``font`` embedded as a data: URL for the CJK range, named first (None: a
    page without CJK characters, no CJK font), and no rule left that would fetch a file."""
    css = FULL_FACE_RULE.sub("", _static("console.css").decode("utf-8")).replace(', "CRM CJK Full"', "")
    if font is None:
        css = LABEL_FACE_RULE.sub("", css)
    else:
        encoded = base64.b64encode(font).decode("ascii")
        css = css.replace(f"url({FONT})", f"url(data:font/otf;base64,{encoded})") + "\n" + FONT_FIRST + "\n"
    if "</style" in css.lower():
        raise ValueError("console.css contains </style")
    return Markup(css)


def _locale(crm: "CRM") -> str:
    """The exporting user's language (their ``locale``), else English."""
    try:
        user = crm.users.get(crm.actor)
    except crmcore.CRMError:
        return i18n.LOCALES[0]
    return i18n.pick(user.locale) if user.locale else i18n.LOCALES[0]


def dashboard_page(crm: "CRM", entries: list[Any], as_of: datetime) -> str:
    """The dashboard as of ``as_of`` (the range: the start of last month to that day), as one page."""
    zone = crm.as_of().tzinfo
    end = as_of.astimezone(zone).date()
    start = (end.replace(day=1) - timedelta(days=1)).replace(day=1)
    shown = views.dashboard(crm, start, end, now=as_of) | views.task_counts(crm, as_of)
    locale = _locale(crm)
    # Rendered with markers for the stylesheet and plotly first: the font embedded is cut for
    # exactly the CJK characters of that text (labels, names, chart data), then both go in.
    css_here, plotly_here = "/*crmcore-css*/", "/*crmcore-plotly*/"
    page = environment(locale).get_template("dashboard_static.html").render(
        static=True, entries=entries, start=start, end=end, as_of=as_of, zone=zone,
        currency=crm.config.default_currency, css=Markup(css_here), plotly=Markup(plotly_here),
        script=inline_script(_static("console.js").decode("utf-8")), **shown)
    characters = page_characters(page)
    font = cut_subset(characters) if characters else None
    return page.replace(css_here, inline_css(font), 1).replace(plotly_here, inline_script(plotly_js()), 1)
