"""Plausibility against known rationales (ERASER, DeYoung et al. 2020): token F1, IOU-F1 and AUPRC.

A rationale is a boolean mask over the tokens (True: the token is part of the human or planted
rationale). Hard metrics turn the scores into a prediction by taking the top-k tokens, k being the
rationale's size unless given; ``protected`` tokens (e.g. ``[CLS]``/``[SEP]``) are left out of both sides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score

from ..errors import InputError
from ._checks import as_mask, as_scores, same_length


def _prepare(scores: Any, rationale: Any, protected: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, rationale, kept positions) with protected tokens removed and the rationale checked."""
    raw = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores)
    s = raw.astype(bool) if raw.dtype == bool else as_scores(raw)
    if s.ndim != 1:
        raise InputError(f"scores must be one-dimensional, got shape {s.shape}")
    r = as_mask(rationale, len(s), "rationale")
    keep = np.ones(len(s), dtype=bool) if protected is None else ~as_mask(protected, len(s), "protected")
    same_length(s, r, "scores", "rationale")
    s, r = s[keep], r[keep]
    if not r.any():
        raise InputError("the rationale is empty: no token is marked, so plausibility is undefined")
    return s, r, np.flatnonzero(keep)


def hard_prediction(scores: Any, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` highest scores (ties: the earlier token wins)."""
    s = as_scores(scores)
    if not 1 <= k <= len(s):
        raise InputError(f"k must be between 1 and {len(s)}, got {k}")
    out = np.zeros(len(s), dtype=bool)
    out[np.argsort(-s, kind="stable")[:k]] = True
    return out


def _predicted(s: np.ndarray, r: np.ndarray, k: int | None) -> np.ndarray:
    # Boolean scores are already a hard rationale; otherwise take as many tokens as the truth has.
    if s.dtype == bool:
        return s
    return hard_prediction(s, int(r.sum()) if k is None else int(k))


def token_f1(scores: Any, rationale: Any, *, k: int | None = None, protected: Any | None = None) -> float:
    """Token-level F1 between the top-k tokens (or a boolean prediction) and the rationale."""
    s, r, _ = _prepare(scores, rationale, protected)
    return float(f1_score(r, _predicted(s, r, k), zero_division=0.0))


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as half-open ``(start, end)`` token spans."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def iou_f1(
    scores: Any,
    rationale: Any,
    *,
    k: int | None = None,
    threshold: float = 0.5,
    protected: Any | None = None,
) -> float:
    """ERASER's IOU-F1: a predicted span counts as matched when its best IOU with a true span reaches ``threshold``."""
    if not 0 < threshold <= 1:
        raise InputError(f"threshold must be in (0, 1], got {threshold}")
    s, r, positions = _prepare(scores, rationale, protected)
    pred = _predicted(s, r, k)
    # Spans are taken over the original positions so that a protected token still separates two spans.
    n = int(positions[-1]) + 1
    full_pred, full_true = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    full_pred[positions], full_true[positions] = pred, r
    pred_spans, true_spans = spans(full_pred), spans(full_true)
    if not pred_spans:
        return 0.0
    # IOU of two token spans: overlap over union, as [pred, true] matrices.
    ps = np.array(pred_spans)[:, None, :]
    ts = np.array(true_spans)[None, :, :]
    inter = np.clip(np.minimum(ps[..., 1], ts[..., 1]) - np.maximum(ps[..., 0], ts[..., 0]), 0, None)
    union = (ps[..., 1] - ps[..., 0]) + (ts[..., 1] - ts[..., 0]) - inter
    best = (inter / union).max(axis=1)
    matched = int((best >= threshold).sum())
    # As in ERASER: matched predictions over predicted spans (precision) and over true spans (recall).
    precision, recall = matched / len(pred_spans), matched / len(true_spans)
    return 0.0 if precision == 0 or recall == 0 else float(2 * precision * recall / (precision + recall))


def auprc(scores: Any, rationale: Any, *, protected: Any | None = None) -> float:
    """Area under the precision-recall curve of the soft scores against the rationale (average precision)."""
    s, r, _ = _prepare(scores, rationale, protected)
    if s.dtype == bool:
        raise InputError("AUPRC needs soft scores, got a boolean prediction")
    if r.all():
        raise InputError("every token is in the rationale: AUPRC is undefined without negatives")
    return float(average_precision_score(r, s))
