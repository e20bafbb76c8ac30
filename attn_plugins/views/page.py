"""Standalone HTML pages: safe embedding of text and data, inlined vendored JavaScript, the View object."""

from __future__ import annotations

import html as _html
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import write_atomic

# Every page forbids loading anything from outside the document: an http(s) URL that slipped into a
# vendored library or a token can never be fetched, and a missing inline module fails loudly.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
)

_VENDOR = ("d3-5.7.0.min.js", "jquery-3.7.1.min.js", "require-2.3.6.js")
# The vendored libraries are loaded as globals before require.js exists (d3 would otherwise issue an
# anonymous define() that require.js rejects), then handed to require.js under the names bertviz asks for.
_AMD_SHIM = (
    "define('d3', [], function () { return window.d3; });\ndefine('jquery', [], function () { return window.jQuery; });"
)


# Characters an XML 1.0 document (SVG) cannot hold and an HTML parser reports as errors when they appear raw:
# C0 controls other than tab, newline and carriage return, DEL, C1 controls, surrogates, U+FFFE and U+FFFF.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _stand_in(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # Unicode's control pictures: NUL shows as ␀, ESC as ␛
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"\\u{code:04x}"


def visible(text: Any) -> str:
    """``text`` with every character XML or HTML cannot hold raw replaced by a visible stand-in.

    C0 controls become Unicode's control pictures (NUL ␀, ESC ␛, BEL ␇), DEL becomes ␡, and C1 controls,
    lone surrogates and the non-characters U+FFFE/U+FFFF become ``\\uXXXX``; tab, newline and carriage
    return stay. Every token and text a view writes goes through it, so any token string gives a
    well-formed page or SVG file.
    """
    return _UNSAFE.sub(_stand_in, str(text))


def escape(text: Any) -> str:
    """``text`` made :func:`visible` and escaped for HTML text and quoted attribute values."""
    return _html.escape(visible(text), quote=True)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def script_json(obj: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: no character of it can end the block.

    Characters an HTML parser must not meet raw (DEL, C1 controls, lone surrogates) are written as
    ``\\u`` escapes, which mean the same characters to ``JSON.parse``.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # '<', '>' and '&' only occur inside JSON strings, where \\u escapes mean the same characters.
    text = (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return _UNSAFE.sub(_json_escape, text)


def script_code(code: str) -> str:
    """JavaScript checked to be safe inside an inline ``<script>`` element."""
    lowered = code.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise InputError("inline JavaScript must not contain '</script' or '<!--'")
    return code


def new_id(prefix: str = "attn") -> str:
    """A document-unique element id (views can be combined into one report page)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@cache
def package_text(folder: str, name: str) -> str:
    """A text file shipped in ``attn_plugins/views/<folder>/``."""
    return resources.files("attn_plugins.views").joinpath(folder, name).read_text(encoding="utf-8")


@cache
def vendor_scripts() -> str:
    """The vendored d3, jQuery and require.js as inline script elements, registered as AMD modules."""
    parts = [f"<script>{script_code(package_text('vendor', name))}</script>" for name in _VENDOR]
    parts.append(f"<script>{_AMD_SHIM}</script>")
    return "\n".join(parts)


@dataclass
class Fragment:
    """A piece of a page: trusted HTML (user strings already escaped or in JSON blocks) and its scripts."""

    body: str
    scripts: list[str] = field(default_factory=list)
    libraries: bool = False  # needs d3, jQuery and require.js
    height: int = 400  # approximate pixels, for the Jupyter frame
    data: dict[str, Any] = field(default_factory=dict)  # payload blocks by element id, shared across fragments


def render_page(fragments: list[Fragment], title: str) -> str:
    """A complete standalone HTML document holding ``fragments`` in order."""
    needs_libs = any(f.libraries for f in fragments)
    needs_runtime = any(f.scripts for f in fragments)
    head_scripts = vendor_scripts() if needs_libs else ""
    runtime = ""
    if needs_runtime:
        runtime = "<script>" + script_code(package_text("templates", "runtime.js")) + "</script>\n"
        runtime += "<script>" + script_code(package_text("templates", "canvas_views.js")) + "</script>\n"
    body = "\n".join(f.body for f in fragments)
    # A payload used by several views (head and model view of one record) is written once.
    blocks = {ident: block for f in fragments for ident, block in f.data.items()}
    data = "\n".join(json_block(ident, block) for ident, block in blocks.items())
    scripts = "\n".join(f"<script>{script_code(s)}</script>" for f in fragments for s in f.scripts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{package_text('templates', 'page.css')}</style>\n"
        f"{head_scripts}\n{runtime}</head>\n<body>\n{body}\n{data}\n{scripts}\n</body>\n</html>\n"
    )


_STATIC_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


class View:
    """A rendered view: a standalone page (``.html``), written with ``.save(path)``, shown inline in Jupyter."""

    def __init__(self, fragments: list[Fragment], title: str) -> None:
        self.fragments = fragments
        self.title = title
        self._html: str | None = None

    @property
    def html(self) -> str:
        """The standalone HTML page (vendored JavaScript inlined; opens offline from a file)."""
        if self._html is None:
            self._html = render_page(self.fragments, self.title)
        return self._html

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (``.html``/``.htm``); image formats are for heatmap and text views."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in _STATIC_SUFFIXES:
            raise InputError(
                f"{type(self).__name__} is interactive and saves as .html; for {suffix} images use "
                "ap.views.heatmap(...) or ap.views.text(...)"
            )
        if suffix not in (".html", ".htm"):
            raise InputError(f"cannot save a view as {suffix or 'a file without suffix'!r}; use .html")
        return write_atomic(path, self.html)

    def _repr_html_(self) -> str:
        # An isolated frame: the page's require.js, ids and CSP cannot clash with the notebook's own.
        height = sum(f.height for f in self.fragments) + 40
        return (
            f'<iframe srcdoc="{escape(self.html)}" sandbox="allow-scripts" '
            f'style="width:100%;height:{height}px;border:0" title="{escape(self.title)}"></iframe>'
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.title!r}: {len(self.html)} bytes of HTML>"


def json_block(element_id: str, obj: Any) -> str:
    """A ``<script type="application/json">`` element holding ``obj``."""
    if not re.fullmatch(r"[A-Za-z][\w-]*", element_id):
        raise InputError(f"invalid element id {element_id!r}")
    return f'<script type="application/json" id="{element_id}">{script_json(obj)}</script>'
