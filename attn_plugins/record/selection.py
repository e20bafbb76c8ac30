"""The one way to pick layers, heads and query rows, and to reduce an axis of attention.

Adapters, methods, views, reducers and third-party plugins all select through :func:`choose` (layer and
head numbers, in :mod:`attn_plugins.record.numbering`, below the record), :func:`select_rows` and
:func:`reduce_axis`, so the same words mean the same thing everywhere:

* ``layers=`` / ``heads=``: ``None`` (all), one number, or a sequence of numbers. Numbers are the
  *original* layer and head numbers of the model (a record made from a selection remembers them);
  negative numbers count from the end of what is available.
* ``position=``: the query row(s) a method explains: ``"first"``, ``"last"``, ``"mean"`` (mean row),
  ``"all"`` (every row: the token-by-token matrix), ``"generated"`` (the rows that predict generated
  tokens), a row index, a list of row indices, or row weights: a sequence of floats, one per query row,
  for the weighted sum of the rows (a mean-pooled target reads every row, each by how much it moves
  the target; see :func:`attn_plugins.explain.targets.row_weights`).
* ``head_reduce=``: how heads (or any axis) are combined: ``"mean"``, ``"max"``, ``"min"`` or ``"sum"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import InputError
from .kinds import sides
from .numbering import _is_int

if TYPE_CHECKING:
    from .record import AttentionRecord

Position = str | int | Sequence[int] | Sequence[float]
POSITIONS = ("first", "last", "mean", "all", "generated")
REDUCTIONS = ("mean", "max", "min", "sum")


def reduce_axis(t: torch.Tensor, how: str, dim: int = 1) -> torch.Tensor:
    """Combine axis ``dim`` (heads are dim 1 of ``[L, H, Q, K]``) by ``"mean"``, ``"max"``, ``"min"`` or ``"sum"``."""
    if how == "mean":
        return t.mean(dim)
    if how == "max":
        return t.amax(dim)
    if how == "min":
        return t.amin(dim)
    if how == "sum":
        return t.sum(dim)
    raise InputError(f"head_reduce must be one of {', '.join(map(repr, REDUCTIONS))}, not {how!r}")


def check_reduction(how: str) -> str:
    """``how`` if :func:`reduce_axis` accepts it; else the same InputError, raised early."""
    if how not in REDUCTIONS:
        reduce_axis(torch.zeros(1, 1), how)
    return how


def generated_rows(record: AttentionRecord, kind: str, n_rows: int) -> np.ndarray:
    """Query rows that predict generated tokens: decoder rows but the last; causal rows from the prompt's end."""
    if sides(kind)[0] == "target":  # decoder-side rows: the start token and every generated token
        if n_rows < 2:
            raise InputError("position='generated' needs at least two decoder tokens")
        return np.arange(n_rows - 1)
    # ap.capture_generate writes meta['generation']['prompt_tokens']; explainers write meta['prompt_length'].
    given = record.meta.get("prompt_length", (record.meta.get("generation") or {}).get("prompt_tokens"))
    if given is None:
        raise InputError(
            "position='generated' on a single-stack record needs record.meta['prompt_length'] "
            "(the number of prompt tokens before the generated ones), as ap.capture_generate records have"
        )
    prompt = int(given) - (len(record.tokens) - n_rows)  # rows may be a suffix of the tokens
    if not 1 <= prompt < n_rows:
        raise InputError(f"a prompt of {given} tokens leaves no generated token to explain")
    return np.arange(prompt - 1, n_rows - 1)


def is_row_weights(position: Any) -> bool:
    """Whether ``position`` gives row weights (floats) rather than row indices."""
    if isinstance(position, np.ndarray):
        return position.dtype.kind == "f"
    if isinstance(position, (str, bytes)) or not isinstance(position, Sequence):
        return False
    return any(isinstance(p, (float, np.floating)) for p in position)


def row_weights(position: Any, n: int) -> np.ndarray:
    """``position`` as ``n`` finite row weights, or InputError naming what is wrong."""
    w = np.asarray(position, dtype=np.float64)
    if w.ndim != 1 or len(w) != n:
        raise InputError(f"position: row weights need one weight per query row ({n}), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise InputError("position: row weights must be finite")
    return w


def position_rows(
    position: Position, n: int, record: AttentionRecord | None = None, kind: str = "self"
) -> tuple[np.ndarray, str]:
    """The query rows ``position`` names among ``n``, and how to answer: ``"one"`` row, ``"many"``, their ``"mean"``,
    or their sum ``"weighted"`` by :func:`row_weights`.

    ``record`` and ``kind`` are needed only for ``"generated"``.
    """
    if isinstance(position, str):
        if position == "first":
            return np.array([0]), "one"
        if position == "last":
            return np.array([n - 1]), "one"
        if position == "mean":
            return np.arange(n), "mean"
        if position == "all":
            return np.arange(n), "many"
        if position == "generated":
            if record is None:
                raise InputError("position='generated' needs the record")
            return generated_rows(record, kind, n), "many"
        raise InputError(f"position must be one of {', '.join(POSITIONS)} or a token index, not {position!r}")
    if _is_int(position):
        if not -n <= int(position) < n:
            raise InputError(f"position {position} out of range for {n} query tokens")
        return np.array([int(position) % n]), "one"
    if is_row_weights(position):
        row_weights(position, n)
        return np.arange(n), "weighted"
    if not isinstance(position, Sequence | np.ndarray):
        raise InputError(f"position must be a string, an index or a list of indices, not {type(position).__name__}")
    rows = list(position)
    if not rows:
        raise InputError("position: the list of query rows is empty")
    for r in rows:
        if not _is_int(r) or not -n <= int(r) < n:
            raise InputError(f"position {r!r} out of range for {n} query tokens")
    return np.asarray(rows, dtype=int) % n, "many"


def select_rows(m: Any, position: Position, record: AttentionRecord | None = None, kind: str = "self") -> Any:
    """Rows of ``m`` (``[queries, ...]``, NumPy or torch) for ``position``; see the module docstring.

    One position gives one row; a list of indices or ``"generated"`` gives ``[rows, ...]``.
    """
    rows, how = position_rows(position, m.shape[0], record, kind)
    if how == "mean":
        return m.mean(0)
    if how == "weighted":
        w = row_weights(position, m.shape[0])
        return w @ m if isinstance(m, np.ndarray) else torch.as_tensor(w, dtype=m.dtype) @ m
    picked = m[rows]
    return picked[0] if how == "one" else picked
