"""Per-head statistics of attention weights: row entropy and where the mass goes.

One implementation serves the report's per-head summary, :func:`attn_plugins.metrics.diagnostics.diagnose`
and the streaming reducers. Every function takes weights ``[..., heads, queries, keys]`` (a record's
``[L, H, Q, K]`` or one streamed layer ``[B, H, Q, K]``) and returns ``[..., heads]``.
"""

from __future__ import annotations

import torch

from ..errors import InputError


def visible_keys(
    n_queries: int, n_keys: int, causal: bool, key_mask: torch.Tensor | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """How many keys each query row may see: ``[Q]``, or ``[B, Q]`` under a padding ``key_mask`` ``[B, K]``.

    Causal rows see the past and themselves; queries may be the last ``Q`` of ``K`` positions (generation).
    """
    if key_mask is None:
        if causal:
            return torch.arange(n_queries, device=device) + (n_keys - n_queries) + 1
        return torch.full((n_queries,), n_keys, device=device)
    counts = key_mask.long()
    if causal:
        return torch.cumsum(counts, dim=1)[:, n_keys - n_queries :]  # real keys up to each query
    return counts.sum(1, keepdim=True).expand(-1, n_queries)


def head_entropy(
    weights: torch.Tensor,
    *,
    causal: bool = False,
    normalized: bool = True,
    key_mask: torch.Tensor | None = None,
    query_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean entropy (natural log) of each head's rows, ``[..., H]``, in float64.

    ``normalized`` divides each row by the log of the number of keys it may see (1 = uniform) and leaves
    out rows that see a single key. ``key_mask`` ``[B, K]`` and ``query_mask`` ``[B, Q]`` (1 = real
    token) apply to a padded batch ``[B, H, Q, K]``; padding columns must hold zeros.
    """
    num, den = head_entropy_sums(
        weights, causal=causal, normalized=normalized, key_mask=key_mask, query_mask=query_mask
    )
    if not bool((den > 0).all()):
        raise InputError("every attention row sees a single key: entropy is not informative")
    return num / den


def head_entropy_sums(
    weights: torch.Tensor,
    *,
    causal: bool = False,
    normalized: bool = True,
    key_mask: torch.Tensor | None = None,
    query_mask: torch.Tensor | None = None,
    row0: int = 0,
    n_queries: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum of the counted rows' entropies and their number, each ``[..., H]`` (float64): see :func:`head_entropy`.

    ``weights`` may hold the query rows ``row0 ..`` of a layer of ``n_queries`` rows (a streamed query
    block); ``query_mask`` is then the whole layer's ``[B, n_queries]``. Sums of blocks add up to the layer's.
    """
    if weights.dim() < 3:
        raise InputError(f"head statistics need weights [..., heads, queries, keys], got {tuple(weights.shape)}")
    n_rows, n_k = weights.shape[-2:]
    n_q = n_queries if n_queries is not None else n_rows
    # entr in the weights' own dtype and a float32 sum: a float64 copy of every layer costs more than it gains.
    h = torch.special.entr(weights.float()).sum(-1).double()  # [..., H, rows]; entr(0) = 0
    visible = visible_keys(n_q, n_k, causal, key_mask, weights.device)[..., row0 : row0 + n_rows]
    if query_mask is not None:
        rows = query_mask.bool()[..., row0 : row0 + n_rows].clone()
    else:
        rows = torch.ones(visible.shape, dtype=torch.bool, device=weights.device)
    if normalized:
        rows &= visible > 1
        h = h / torch.log(visible.clamp_min(2).double()).unsqueeze(-2)
    if key_mask is not None:  # [B, Q] -> broadcast over heads
        rows = rows.unsqueeze(-2)
    w = rows.double()
    return (h * w).sum(-1), w.sum(-1).expand(h.shape[:-1])


def mass_on(weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Mean share of each head's row mass on the keys flagged in ``keys`` (bool ``[K]``), ``[..., H]``."""
    if keys.shape[-1] != weights.shape[-1]:
        raise InputError(f"{keys.shape[-1]} key flags for {weights.shape[-1]} keys")
    return (weights.double() @ keys.double()).mean(-1)


def diagonal_mass(weights: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Mean weight of each head on the key ``offset`` positions from the query's own (0: itself, -1: previous).

    Queries may be the last ``Q`` of ``K`` positions; rows without such a key are left out (NaN if none).
    """
    n_q, n_k = weights.shape[-2:]
    diag = torch.diagonal(weights.double(), offset=(n_k - n_q) + offset, dim1=-2, dim2=-1)
    if diag.shape[-1] == 0:
        return torch.full(weights.shape[:-2], float("nan"), dtype=torch.float64)
    return diag.mean(-1)
