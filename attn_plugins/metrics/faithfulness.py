"""Faithfulness by erasure: comprehensiveness, sufficiency, AOPC (ERASER) and deletion/insertion curves.

Every function takes a batched ``predict`` that maps an int array of token ids ``[batch, tokens]`` to
class probabilities ``[batch, classes]``, the token ids of one example, one score per token, and the
target class. Erased tokens are *replaced* by ``baseline_id`` (e.g. ``[MASK]`` or ``[PAD]``) rather than
deleted as in ERASER (DeYoung et al. 2020): every perturbed input then keeps the original length and
positions, so all of them go through the model in one batched call. Tokens flagged ``protected``
(special tokens such as ``[CLS]``/``[SEP]``) are never ranked nor erased, and percentages count only
the unprotected tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import auc

from ..errors import InputError
from ..results import Result, plain
from ._checks import as_mask, as_scores, as_token_ids, same_length

PredictFn = Callable[[np.ndarray], Any]
# ERASER's AOPC bins: the top 1, 5, 10, 20 and 50 % of tokens.
DEFAULT_BINS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)


@dataclass(frozen=True)
class AOPC(Result):
    """Area over the perturbation curve: the mean drop over bins (``value``), and the drop in each bin."""

    value: float
    bins: tuple[float, ...]
    points: tuple[float, ...]
    full_probability: float

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON."""
        return plain(
            {
                "value": self.value,
                "bins": list(self.bins),
                "points": list(self.points),
                "full_probability": self.full_probability,
            }
        )

    def rows(self) -> list[dict[str, Any]]:
        """One row per bin: the share of tokens erased and the probability drop."""
        return [{"bin": b, "drop": p} for b, p in zip(self.bins, self.points)]


@dataclass(frozen=True)
class Curve(Result):
    """A deletion or insertion curve: target probability against the fraction of tokens changed."""

    fractions: np.ndarray
    probabilities: np.ndarray
    area: float

    @property
    def value(self) -> float:
        """The area under the curve (the number a metric reports)."""
        return self.area

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON."""
        return plain({"fractions": self.fractions, "probabilities": self.probabilities, "area": self.area})

    def rows(self) -> list[dict[str, Any]]:
        """One row per point of the curve."""
        return [{"fraction": f, "probability": p} for f, p in zip(self.fractions.tolist(), self.probabilities.tolist())]


# ---------------------------------------------------------------------------- shared machinery
@dataclass
class _Prepared:
    ids: np.ndarray  # [T] token ids
    order: np.ndarray  # unprotected positions, most important first
    target: int


def _prepare(token_ids: Any, scores: Any, target: int, protected: Any | None, baseline_id: int) -> _Prepared:
    ids = as_token_ids(token_ids)
    s = as_scores(scores)
    same_length(ids, s, "token_ids", "scores")
    prot = np.zeros(len(ids), dtype=bool) if protected is None else as_mask(protected, len(ids), "protected")
    free = np.flatnonzero(~prot)
    if free.size == 0:
        raise InputError("every token is protected: there is nothing to erase")
    if not isinstance(target, (int, np.integer)) or isinstance(target, bool):
        raise InputError(f"target must be a class index (int), got {target!r}")
    if not isinstance(baseline_id, (int, np.integer)) or isinstance(baseline_id, bool):
        raise InputError(f"baseline_id must be a token id (int), got {baseline_id!r}")
    # Stable sort on the negated scores: ties keep their left-to-right order, so results are reproducible.
    order = free[np.argsort(-s[free], kind="stable")]
    return _Prepared(ids, order, int(target))


def _bin_sizes(n: int, bins: Sequence[float]) -> list[int]:
    """Tokens per bin: ceil(fraction · n), at least one, so short texts still erase something."""
    if len(bins) == 0:
        raise InputError("bins is empty")
    out = []
    for b in bins:
        if not 0 < float(b) <= 1:
            raise InputError(f"bins are fractions in (0, 1], got {b}")
        out.append(min(n, max(1, math.ceil(float(b) * n - 1e-9))))
    return out


def _k_from(n: int, fraction: float | None, k: int | None) -> int:
    if (fraction is None) == (k is None):
        raise InputError("give exactly one of fraction= or k=")
    if k is not None:
        if not 1 <= int(k) <= n:
            raise InputError(f"k must be between 1 and the {n} erasable tokens, got {k}")
        return int(k)
    return _bin_sizes(n, [fraction])[0]


def target_probabilities(predict: PredictFn, batch: np.ndarray, target: int, batch_size: int = 64) -> np.ndarray:
    """The target-class output of ``predict`` for every row of ``batch``, run in chunks of ``batch_size``."""
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    outs = []
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        out = predict(chunk)
        out = np.asarray(out.detach().cpu() if hasattr(out, "detach") else out, dtype=float)
        if out.ndim != 2 or out.shape[0] != len(chunk):
            raise InputError(f"predict must return [batch, classes] for {len(chunk)} inputs, got shape {out.shape}")
        if not 0 <= target < out.shape[1]:
            raise InputError(f"target class {target} is out of range for {out.shape[1]} classes")
        if not np.isfinite(out).all():
            raise InputError("predict returned NaN or infinite values")
        outs.append(out[:, target])
    return np.concatenate(outs)


def _erase_top(p: _Prepared, ks: Sequence[int], baseline_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the top-k erased (comprehensiveness) and rows with only the top-k kept (sufficiency)."""
    n = len(ks)
    removed = np.tile(p.ids, (n, 1))
    kept = np.tile(p.ids, (n, 1))
    for row, k in enumerate(ks):
        removed[row, p.order[:k]] = baseline_id
        kept[row, p.order[k:]] = baseline_id
    return removed, kept


# ---------------------------------------------------------------------------- ERASER
def comprehensiveness(
    predict: PredictFn,
    token_ids: Any,
    scores: Any,
    target: int,
    *,
    baseline_id: int,
    fraction: float | None = None,
    k: int | None = None,
    protected: Any | None = None,
) -> float:
    """p(target | x) − p(target | x without its top-k tokens); higher means a more faithful ranking."""
    return _drop(predict, token_ids, scores, target, baseline_id, fraction, k, protected, keep_top=False)


def sufficiency(
    predict: PredictFn,
    token_ids: Any,
    scores: Any,
    target: int,
    *,
    baseline_id: int,
    fraction: float | None = None,
    k: int | None = None,
    protected: Any | None = None,
) -> float:
    """p(target | x) − p(target | only the top-k tokens of x); lower means a more faithful ranking."""
    return _drop(predict, token_ids, scores, target, baseline_id, fraction, k, protected, keep_top=True)


def _drop(
    predict: PredictFn,
    token_ids: Any,
    scores: Any,
    target: int,
    baseline_id: int,
    fraction: float | None,
    k: int | None,
    protected: Any | None,
    keep_top: bool,
) -> float:
    """The probability drop when the top-k tokens are erased (or, ``keep_top``, when all others are)."""
    p = _prepare(token_ids, scores, target, protected, baseline_id)
    kk = _k_from(len(p.order), fraction, k)
    removed, kept = _erase_top(p, [kk], baseline_id)
    probs = target_probabilities(predict, np.vstack([p.ids[None], kept if keep_top else removed]), p.target)
    return float(probs[0] - probs[1])


def aopc(
    predict: PredictFn,
    token_ids: Any,
    scores: Any,
    target: int,
    *,
    baseline_id: int,
    bins: Sequence[float] = DEFAULT_BINS,
    protected: Any | None = None,
    batch_size: int = 64,
) -> dict[str, AOPC]:
    """AOPC comprehensiveness and sufficiency over ``bins`` from one batched call: ``{"comprehensiveness", "sufficiency"}``."""
    p = _prepare(token_ids, scores, target, protected, baseline_id)
    ks = _bin_sizes(len(p.order), bins)
    removed, kept = _erase_top(p, ks, baseline_id)
    probs = target_probabilities(predict, np.vstack([p.ids[None], removed, kept]), p.target, batch_size)
    full, comp, suff = probs[0], probs[1 : 1 + len(ks)], probs[1 + len(ks) :]
    bins_t = tuple(float(b) for b in bins)
    # ERASER averages the per-bin drops (its AOPC), the same for both directions.
    comp_pts = tuple(float(x) for x in full - comp)
    suff_pts = tuple(float(x) for x in full - suff)
    return {
        "comprehensiveness": AOPC(float(np.mean(comp_pts)), bins_t, comp_pts, float(full)),
        "sufficiency": AOPC(float(np.mean(suff_pts)), bins_t, suff_pts, float(full)),
    }


def aopc_comprehensiveness(predict: PredictFn, token_ids: Any, scores: Any, target: int, **kwargs: Any) -> AOPC:
    """ERASER's AOPC comprehensiveness: the mean drop when the top 1, 5, 10, 20, 50 % are erased."""
    return aopc(predict, token_ids, scores, target, **kwargs)["comprehensiveness"]


def aopc_sufficiency(predict: PredictFn, token_ids: Any, scores: Any, target: int, **kwargs: Any) -> AOPC:
    """ERASER's AOPC sufficiency: the mean drop when only the top 1, 5, 10, 20, 50 % are kept."""
    return aopc(predict, token_ids, scores, target, **kwargs)["sufficiency"]


# ---------------------------------------------------------------------------- curves
def _steps(n: int, max_steps: int | None) -> np.ndarray:
    """Numbers of changed tokens along the curve: every count, or ``max_steps`` evenly spaced ones."""
    if max_steps is None or n <= max_steps:
        return np.arange(n + 1)
    if max_steps < 1:
        raise InputError(f"max_steps must be positive, got {max_steps}")
    return np.unique(np.round(np.linspace(0, n, max_steps + 1)).astype(int))


def _curve(
    predict: PredictFn,
    token_ids: Any,
    scores: Any,
    target: int,
    baseline_id: int,
    protected: Any | None,
    insert: bool,
    max_steps: int | None,
    batch_size: int,
) -> Curve:
    p = _prepare(token_ids, scores, target, protected, baseline_id)
    n = len(p.order)
    counts = _steps(n, max_steps)
    rows = np.tile(p.ids, (len(counts), 1))
    for row, c in enumerate(counts):
        # Deletion erases the c most important tokens; insertion starts from all erased and restores them.
        rows[row, p.order[c:] if insert else p.order[:c]] = baseline_id
    probs = target_probabilities(predict, rows, p.target, batch_size)
    fractions = counts / n
    return Curve(fractions, probs, float(auc(fractions, probs)))


def deletion_curve(
    predict: PredictFn,
    token_ids: Any,
    scores: Any,
    target: int,
    *,
    baseline_id: int,
    protected: Any | None = None,
    max_steps: int | None = None,
    batch_size: int = 64,
) -> Curve:
    """Target probability as the most important tokens are erased one by one (Petsiuk et al. 2018); lower area is better."""
    return _curve(predict, token_ids, scores, target, baseline_id, protected, False, max_steps, batch_size)


def insertion_curve(
    predict: PredictFn,
    token_ids: Any,
    scores: Any,
    target: int,
    *,
    baseline_id: int,
    protected: Any | None = None,
    max_steps: int | None = None,
    batch_size: int = 64,
) -> Curve:
    """Target probability as the most important tokens are restored into an all-erased input; higher area is better."""
    return _curve(predict, token_ids, scores, target, baseline_id, protected, True, max_steps, batch_size)
