"""Attention as structure for SHAP: a ``Text`` masker whose Partition hierarchy comes from the attention.

shap's ``Partition`` explainer estimates Owen values over a hierarchy of the tokens; its default ``Text``
masker builds that hierarchy from surface cues (spaces, punctuation). :class:`AttentionMasker` builds it
from the model's own captured attention instead: tokens that attend to each other strongly are grouped
first, so the explainer spends its evaluations on coalitions the model treats as units. Everything else
(masking with the mask token, special tokens kept) is shap's ``Text`` masker unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import shap
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from ..errors import InputError


def maskable_positions(masker: shap.maskers.Text, s: str) -> tuple[np.ndarray, int]:
    """Positions a Text masker can mask (not its kept prefix/suffix, not separators) and the token count."""
    segments, _ = masker.token_segments(s)
    n = len(segments)
    keep = np.zeros(n, dtype=bool)
    keep[: masker.keep_prefix] = True
    if masker.keep_suffix > 0:
        keep[n - masker.keep_suffix :] = True
    sep = getattr(masker.tokenizer, "sep_token", None)
    keep |= np.array([seg == sep for seg in segments])
    return np.nonzero(~keep)[0], n


def contiguous_linkage(affinity: np.ndarray) -> np.ndarray:
    """Agglomerative tree [n-1, 4] over n positions in order, merging the most affine *adjacent* clusters.

    The affinity of two clusters is the mean affinity over their token pairs (average linkage), so every
    cluster stays a contiguous span of text, as shap's text plots expect.
    """
    n = affinity.shape[0]
    if n < 2:
        return np.zeros((0, 4))
    total = affinity.astype(float).copy()  # cluster-by-cluster sums of affinity, in text order
    sizes = np.ones(n)
    ids = np.arange(n)
    out = np.zeros((n - 1, 4))
    for step in range(n - 1):  # one merge per step; each step is vectorized over the clusters left
        k = len(sizes)
        adjacent = total[np.arange(k - 1), np.arange(1, k)] / (sizes[:-1] * sizes[1:])
        i = int(np.argmax(adjacent))
        out[step] = [ids[i], ids[i + 1], 0.0, sizes[i] + sizes[i + 1]]
        # merge cluster i + 1 into i: add its row and column, then drop them
        total[i] += total[i + 1]
        total[:, i] += total[:, i + 1]
        total = np.delete(np.delete(total, i + 1, 0), i + 1, 1)
        sizes[i] += sizes[i + 1]
        sizes = np.delete(sizes, i + 1)
        ids[i] = n + step
        ids = np.delete(ids, i + 1)
    return out


def free_linkage(affinity: np.ndarray) -> np.ndarray:
    """Average-linkage tree [n-1, 4] on distance max(affinity) - affinity, without the contiguity constraint."""
    n = affinity.shape[0]
    if n < 2:
        return np.zeros((0, 4))
    dist = affinity.max() - affinity
    np.fill_diagonal(dist, 0.0)
    return linkage(squareform(dist, checks=False), method="average")


def embed_tree(tree: np.ndarray, players: np.ndarray, n_total: int) -> np.ndarray:
    """Lift a tree over ``players`` (positions in a text of ``n_total`` tokens) to all tokens.

    The other tokens (special tokens, never masked) join at the top, one by one, so they do not bend the
    hierarchy of the tokens that are explained. Heights are cluster sizes over n_total, as shap's Text masker.
    """
    p = len(players)
    others = np.setdiff1d(np.arange(n_total), players)
    rows = np.zeros((n_total - 1, 4))
    if p >= 2:
        lifted = tree.copy()
        for col in (0, 1):
            c = lifted[:, col].astype(int)
            # leaves map to their text positions, internal nodes keep their order after the n_total leaves
            lifted[:, col] = np.where(c < p, players[np.minimum(c, p - 1)], c - p + n_total)
        rows[: p - 1] = lifted
        root, size = n_total + p - 2, float(p)
    else:
        root, size = int(players[0]), 1.0
    for step, leaf in enumerate(others):
        size += 1
        rows[p - 1 + step] = [root, leaf, 0.0, size]
        root = n_total + p - 1 + step
    rows[:, 2] = rows[:, 3] / n_total
    return rows


class AttentionMasker(shap.maskers.Text):
    """shap's ``Text`` masker with a Partition hierarchy built from the model's attention on each text.

    ``affinity``: ``"attention"`` (mean over layers and heads of the captured weights) or any registered
    method name with a matrix (e.g. ``"rollout"``); the matrix is symmetrized. ``contiguous=True`` keeps
    clusters contiguous spans of text.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        affinity: str = "attention",
        contiguous: bool = True,
        mask_token: str | None = None,
        collapse_mask_token: bool | str = "auto",
        **method_options: Any,
    ):
        super().__init__(tokenizer, mask_token=mask_token, collapse_mask_token=collapse_mask_token)
        self.model = model
        self.affinity = affinity
        self.contiguous = contiguous
        self.method_options = method_options
        self.captures = 0  # forward passes spent on attention (cost reports)

    def players(self, s: str) -> tuple[np.ndarray, int]:
        """Positions this masker can mask, and the token count."""
        return maskable_positions(self, s)

    def token_affinity(self, s: str) -> np.ndarray:
        """Symmetric token-by-token affinity [N, N] of the text from its captured attention."""
        from ..capture import capture
        from ..methods import get_method

        record = capture(self.model, self.tokenizer, s)
        self.captures += 1
        if self.affinity == "attention":
            m = record.attentions[record.default_kind].double().mean((0, 1)).numpy()
        else:
            m = get_method(self.affinity)(record, "all", **self.method_options)
        return (m + m.T) / 2

    def clustering(self, s: str) -> np.ndarray:
        """The Partition tree [N-1, 4] of ``s`` from its attention (called by shap's Partition explainer)."""
        players, n = self.players(s)
        if len(players) == 0:
            raise InputError("the text has no maskable tokens to explain")
        affinity = self.token_affinity(s)
        if affinity.shape[0] != n:
            raise InputError(f"the capture has {affinity.shape[0]} tokens but the masker cut {n} segments")
        sub = affinity[np.ix_(players, players)]
        tree = contiguous_linkage(sub) if self.contiguous else free_linkage(sub)
        return embed_tree(tree, players, n)


def coalition_strings(masker: shap.maskers.Text, s: str) -> tuple[np.ndarray, list[str]]:
    """The masker's players of ``s`` and the string it builds for every coalition of them.

    Coalition ``c`` (0 .. 2^p - 1) keeps player ``j`` when bit ``j`` of ``c`` is set; the strings are
    exactly what shap's explainers pass to the model function (the mask token written in place of each
    masked token, special tokens kept).
    """
    segments, _ = masker.token_segments(s)
    n = len(segments)
    players, _ = maskable_positions(masker, s)
    p = len(players)
    coalitions = (np.arange(2**p)[:, None] >> np.arange(p)[None, :]) & 1  # [2^p, p] bit patterns
    masks = np.ones((2**p, n), dtype=bool)
    masks[:, players] = coalitions.astype(bool)
    return players, [masker(m, s)[0][0] for m in masks]


def shapley_values(values: np.ndarray, players: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values [n] from the values of every coalition (index = bit pattern); non-players get 0."""
    p = len(players)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (2**p,):
        raise InputError(f"exact Shapley values over {p} players need 2^{p} coalition values, got {values.shape}")
    coalitions = (np.arange(2**p)[:, None] >> np.arange(p)[None, :]) & 1
    # φ_i = Σ_S |S|!(p-|S|-1)!/p! · (v(S ∪ {i}) - v(S)) over coalitions S without i
    size = coalitions.sum(1)
    weight = np.array([math.factorial(k) * math.factorial(p - k - 1) / math.factorial(p) for k in range(p)])
    phi = np.zeros(n)
    index = np.arange(2**p)
    for j in range(p):  # one vectorized sum per player
        without = index[coalitions[:, j] == 0]
        phi[players[j]] = np.sum(weight[size[without]] * (values[without | (1 << j)] - values[without]))
    return phi


def coalition_values(
    fn: Callable[[Sequence[str]], np.ndarray],
    masker: shap.maskers.Text,
    s: str,
    batch: int = 256,
    max_players: int = 14,
) -> tuple[np.ndarray, np.ndarray]:
    """(players, values [2^p]): a scalar ``fn`` on every coalition of the maskable tokens of ``s``, masked as ``masker`` does."""
    players, texts = _checked_strings(masker, s, max_players)
    values = np.concatenate(
        [np.asarray(fn(texts[i : i + batch]), float).reshape(-1) for i in range(0, len(texts), batch)]
    )
    return players, values


def _checked_strings(masker: shap.maskers.Text, s: str, max_players: int) -> tuple[np.ndarray, list[str]]:
    players, _ = maskable_positions(masker, s)
    p = len(players)
    if p == 0:
        raise InputError("the text has no maskable tokens to explain")
    if p > max_players:
        raise InputError(
            f"exact Shapley values over {p} tokens need 2^{p} evaluations; at most {max_players} tokens "
            f"(2^{max_players}) are allowed: use a shorter text or shap's Partition explainer"
        )
    return coalition_strings(masker, s)


def exact_shapley(
    fn: Callable[[Sequence[str]], np.ndarray], masker: shap.maskers.Text, s: str, batch: int = 256
) -> np.ndarray:
    """Exact Shapley values [N] of a scalar ``fn`` over the tokens of ``s``, masking as ``masker`` does.

    Every coalition of the maskable tokens is evaluated (2^p inputs), so keep texts short (p <= 14).
    Tokens the masker never masks get 0.
    """
    segments, _ = masker.token_segments(s)
    players, values = coalition_values(fn, masker, s, batch)
    return shapley_values(values, players, len(segments))
