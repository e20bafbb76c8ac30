"""Exported SVG and HTML stay well-formed for any token string.

SVG files parse as XML and HTML pages hold no raw control character (a parse error in HTML) whatever the
tokens hold: NUL, ESC, other C0 and C1 controls, DEL, lone surrogates, XML specials.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from helpers.broken import small_record

import attn_plugins as ap

# Characters XML 1.0 forbids, and HTML treats as parse errors, when they appear raw.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

TOKENS = {
    "NUL": "a\x00b",
    "ESC": "c\x1b[31md",
    "BEL+VT": "e\x07\x0bf",
    "DEL": "g\x7fh",
    "XML specials": "<&>\"'",
    "C1": "i\x85\x9bj",
    "surrogate": "k\ud800l",
    "non-character": "m\uffffn",
    "lone surrogate-free unicode": "naïve 東京 🙂",
}


def _record(token: str):
    return small_record(n=4, tokens=["[CLS]", token, "plain", "[SEP]"])


def _svg_views(rec):
    scores = np.array([0.1, 0.5, 0.3, 0.1])
    return {"heatmap": ap.views.heatmap(rec), "text": ap.views.text(rec, scores)}


@pytest.mark.parametrize("case", list(TOKENS))
@pytest.mark.parametrize("view", ["heatmap", "text"])
def test_svg_export_is_well_formed_xml(tmp_path, case, view):
    rec = _record(TOKENS[case])
    path = tmp_path / f"{view}.svg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib warns about glyphs missing from its font
        _svg_views(rec)[view].save(path)
    ET.parse(path)  # snapshot: "not well-formed (invalid token)" for NUL and ESC


HTML_VIEWS = {
    "head_view": lambda r: ap.views.head_view(r),
    "model_view": lambda r: ap.views.model_view(r),
    "heatmap": lambda r: ap.views.heatmap(r),
    "text": lambda r: ap.views.text(r, np.array([0.1, 0.5, 0.3, 0.1])),
    "report": lambda r: ap.views.report(r, {"raw": ap.attribute(r, "raw")}),
}


@pytest.mark.parametrize("case", ["NUL", "ESC", "BEL+VT", "DEL", "C1", "surrogate", "non-character"])
@pytest.mark.parametrize("view", list(HTML_VIEWS))
def test_html_pages_hold_no_raw_control_characters(case, view):
    rec = _record(TOKENS[case])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        page = HTML_VIEWS[view](rec).html
    found = sorted({hex(ord(c)) for c in _BAD_CHARS.findall(page)})
    assert found == [], f"raw control characters {found} in the {view} page"
    page.encode("utf-8")  # a lone surrogate would make the page unwritable


@pytest.mark.parametrize("view", ["heatmap", "report"])
def test_saved_pages_are_written_and_show_the_control_character(tmp_path, view):
    rec = _record("a\x00b\x1b")
    path = tmp_path / f"{view}.html"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        HTML_VIEWS[view](rec).save(path)
    text = path.read_text(encoding="utf-8")
    assert "a\u2400b\u241b" in text  # NUL and ESC are drawn as ␀ and ␛, not dropped


@pytest.mark.parametrize("view", ["head_view", "model_view"])
def test_raw_tokens_keep_every_character_and_the_page_stays_well_formed(view):
    """Without prettifying, the page's JSON holds the exact tokens: DEL, C1 and surrogates as \\u escapes."""
    import json

    tokens = ["[CLS]", "g\x7fh", "i\x85j", "a\x00b", "k\ud800l", "[SEP]"]
    rec = small_record(n=6, tokens=tokens)
    page = getattr(ap.views, view)(rec, prettify_tokens=False).html
    assert _BAD_CHARS.findall(page) == []
    blocks = re.findall(r'<script type="application/json" id="attn-params[^"]*">(.*?)</script>', page, re.S)
    shown = [s["left_text"] for b in blocks for s in json.loads(b)["attention"]]
    assert shown and all(t == tokens for t in shown)
