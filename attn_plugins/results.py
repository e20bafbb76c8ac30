"""The contract every result object follows: ``to_dict()``, ``to_frame()`` and a readable ``str()`` table.

Results (a comparison, a corpus ranking, diagnostics, plugin listings, erasure curves) derive from
:class:`Result` and define two things: :meth:`Result.to_dict`, everything as plain JSON-ready Python,
and :meth:`Result.rows`, the table a person reads. ``to_frame()`` is that table as a pandas DataFrame and
``str(result)`` the same table as text, so every result prints, serializes and lands in pandas the same way.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any


class Result(ABC):
    """Base class of result objects (see the module docstring for the contract)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything in the result as plain, JSON-ready Python (NaN becomes None)."""

    @abstractmethod
    def rows(self) -> list[dict[str, Any]]:
        """The result as table rows (one dict per row, the same keys in every row)."""

    def to_frame(self) -> Any:
        """The table of :meth:`rows` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as strict JSON (no NaN)."""
        return json.dumps(plain(self.to_dict()), indent=indent, allow_nan=False)

    def __str__(self) -> str:
        return format_table(self.rows())


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays turned into Python ones and NaN/inf into None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of ``rows`` with aligned columns (the keys of the first row unless ``columns``)."""
    if not rows:
        return "(empty)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(str(c)), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)
