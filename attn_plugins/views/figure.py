"""Views drawn with matplotlib: PNG/SVG/PDF export for papers, and the same figure inlined as SVG in a page."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import write_atomic
from .page import Fragment, View, escape, visible

IMAGE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")
# Text stays text in SVG (selectable, escaped by matplotlib), and ids are stable across runs.
_RC = {"svg.fonttype": "none", "svg.hashsalt": "attn-plugins"}


def mpl_label(text: str) -> str:
    """A string matplotlib shows literally and an SVG file can hold: made :func:`visible`, '$' not mathtext."""
    return visible(text).replace("\\", "\\\\").replace("$", r"\$")


class FigureView(View, ABC):
    """A view backed by a matplotlib figure: ``.figure()``, ``.save("x.png" | "x.svg" | "x.pdf" | "x.html")``."""

    def __init__(self, title: str, dpi: int = 150) -> None:
        super().__init__([], title)
        self.dpi = dpi

    @abstractmethod
    def figure(self) -> Any:
        """A new matplotlib Figure of this view."""

    def svg(self) -> str:
        """The figure as an SVG element (no XML prolog), ready to inline in HTML."""
        import matplotlib

        with matplotlib.rc_context(_RC):
            fig = self.figure()
            buf = io.StringIO()
            fig.savefig(buf, format="svg", bbox_inches="tight")
        text = buf.getvalue()
        return text[text.index("<svg") :]

    def fragments_for_page(self) -> list[Fragment]:
        """The figure as one page fragment (inline SVG; the figure carries its own title)."""
        body = f'<div class="attn-view" data-view="{escape(type(self).__name__)}">{self.svg()}</div>'
        return [Fragment(body, height=600)]

    @property
    def html(self) -> str:
        """A standalone page showing the figure as inline SVG."""
        if not self.fragments:
            self.fragments = self.fragments_for_page()
        return super().html

    def _repr_html_(self) -> str:
        # Inline SVG needs no script, so Jupyter shows it directly.
        return self.fragments_for_page()[0].body

    def save(self, path: str | Path) -> Path:
        """Write the figure as PNG, SVG, PDF or JPEG (by suffix), or a standalone page for ``.html``."""
        path = Path(path)
        suffix = path.suffix.lower().lstrip(".")
        if suffix in ("html", "htm"):
            return write_atomic(path, self.html)
        if suffix not in IMAGE_FORMATS:
            raise InputError(
                f"cannot save as {suffix or 'a file without suffix'!r}; use one of {', '.join(IMAGE_FORMATS)}, html"
            )
        import matplotlib

        with matplotlib.rc_context(_RC):
            fig = self.figure()
            # Through a temporary file: a failed write leaves neither half an image nor the temporary file.
            return write_atomic(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=self.dpi, bbox_inches="tight"))
