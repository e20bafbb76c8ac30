"""Input checks shared by the metrics: one clear error per kind of bad input."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError


def as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """A finite 1-D float array, or an InputError naming what is wrong."""
    arr = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=float)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional (one score per token), got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def as_mask(mask: Any, n: int, name: str) -> np.ndarray:
    """A boolean 1-D mask of length ``n``, from booleans or 0/1 integers (not a list of positions)."""
    arr = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{name} has {arr.shape[0]} entries for {n} tokens")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise InputError(f"{name} must hold booleans or 0/1 values")
        arr = arr.astype(bool)
    return arr


def as_token_ids(token_ids: Any) -> np.ndarray:
    """A 1-D int64 array of token ids."""
    arr = np.asarray(token_ids.detach().cpu() if hasattr(token_ids, "detach") else token_ids)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"token_ids must be a non-empty 1-D sequence of ints, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"token_ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise when two per-token arrays differ in length."""
    if a.shape[0] != b.shape[0]:
        raise InputError(f"{name_a} has {a.shape[0]} entries but {name_b} has {b.shape[0]}")
