"""Rank agreement between two score vectors over the same tokens: Spearman, Kendall tau, top-k overlap."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from ..errors import InputError
from ._checks import as_mask, as_scores, same_length


def _pair(a: Any, b: Any, protected: Any | None) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_scores(a, "a"), as_scores(b, "b")
    same_length(x, y, "a", "b")
    if protected is not None:
        keep = ~as_mask(protected, len(x), "protected")
        x, y = x[keep], y[keep]
    if len(x) < 2:
        raise InputError("rank agreement needs at least two tokens")
    return x, y


def _check_not_constant(x: np.ndarray, y: np.ndarray) -> None:
    # A constant vector has no ranking; scipy would return NaN with a warning.
    for name, v in (("a", x), ("b", y)):
        if np.ptp(v) == 0:
            raise InputError(f"{name} is constant: a rank correlation is undefined")


def spearman(a: Any, b: Any, *, protected: Any | None = None) -> float:
    """Spearman's rank correlation between two score vectors (scipy.stats.spearmanr)."""
    x, y = _pair(a, b, protected)
    _check_not_constant(x, y)
    return float(spearmanr(x, y).statistic)


def kendall(a: Any, b: Any, *, protected: Any | None = None) -> float:
    """Kendall's tau-b between two score vectors (scipy.stats.kendalltau)."""
    x, y = _pair(a, b, protected)
    _check_not_constant(x, y)
    return float(kendalltau(x, y).statistic)


def top_k_overlap(a: Any, b: Any, k: int = 3, *, protected: Any | None = None) -> float:
    """Share of the ``k`` highest-scored tokens of ``a`` that are also among the ``k`` highest of ``b``."""
    x, y = _pair(a, b, protected)
    if not 1 <= int(k) <= len(x):
        raise InputError(f"k must be between 1 and {len(x)}, got {k}")
    # Stable sort so ties resolve to the earlier token, the same way for both vectors.
    top_a = set(np.argsort(-x, kind="stable")[: int(k)].tolist())
    top_b = set(np.argsort(-y, kind="stable")[: int(k)].tolist())
    return len(top_a & top_b) / int(k)
