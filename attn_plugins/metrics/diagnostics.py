"""When attention misleads: diffuse heads, sink heads, and disagreement with a faithful reference.

Three warnings a report shows next to an attention view:

* **entropy** per head: a head whose rows are close to uniform says little about any one token;
* **special-token mass** per head: heads that park most of their weight on ``[CLS]``, ``[SEP]`` or
  punctuation act as no-ops ("sink" heads, Clark et al. 2019), so their weights are not importance;
* **disagreement**: the chosen attention view ranks tokens differently from a faithful reference
  (e.g. SHAP values), measured with Spearman's rho and top-k overlap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import RecordValidationError
from ..record import AttentionRecord, statistics
from ..record.kinds import sides
from ..results import Result, format_table, plain
from .agreement import spearman, top_k_overlap

# Tokens that act as attention sinks besides the tokenizer's special tokens (Clark et al. 2019 saw
# heads attend to [SEP] and to periods and commas as a no-op).
SEPARATORS: tuple[str, ...] = (".", ",", ";", ":", "!", "?", "Ġ.", "Ġ,", "▁.", "▁,")


def _weights(record: AttentionRecord, kind: str | None) -> tuple[str, torch.Tensor]:
    kind = kind or record.default_kind
    if kind not in record.attentions:
        raise RecordValidationError("attentions", f"the record has no {kind!r} attention; it has {record.kinds}")
    return kind, record.attentions[kind].detach()


def head_entropy(record: AttentionRecord, kind: str | None = None, normalized: bool = True) -> np.ndarray:
    """Mean entropy of each head's attention rows, ``[layers, heads]``; normalized to [0, 1] by default.

    Normalization divides each row's entropy by the log of the number of keys that row may see (all
    keys, or the past and present for causal rows), so 1 means uniform attention. Rows that see a
    single key carry no information about diffuseness and are left out of the mean.
    """
    kind, a = _weights(record, kind)
    return statistics.head_entropy(a, causal=record.is_causal(kind), normalized=normalized).numpy()


def special_mask(record: AttentionRecord, separators: Iterable[str] = SEPARATORS, side: str = "source") -> np.ndarray:
    """Boolean mask of the keys that count as sinks: special tokens plus separator tokens."""
    tokens = record.tokens if side == "source" else (record.target_tokens or [])
    special = record.special_tokens_mask if side == "source" else record.target_special_tokens_mask
    seps = set(separators)
    mask = np.array([t in seps for t in tokens], dtype=bool)
    if special is not None:
        mask |= np.asarray(special, dtype=bool)
    return mask


def special_token_mass(
    record: AttentionRecord, kind: str | None = None, separators: Iterable[str] = SEPARATORS
) -> np.ndarray:
    """Mean share of each head's attention that lands on special and separator tokens, ``[layers, heads]``."""
    kind, a = _weights(record, kind)
    mask = special_mask(record, separators, sides(kind)[1])
    if mask.shape[0] != a.shape[-1]:
        raise RecordValidationError("tokens", f"{mask.shape[0]} key tokens for {a.shape[-1]} keys")
    return statistics.mass_on(a, torch.from_numpy(mask)).numpy()


@dataclass
class Disagreement(Result):
    """How a view's scores compare with a faithful reference, and whether to warn."""

    spearman: float
    top_k_overlap: float
    k: int
    flagged: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON."""
        return plain(
            {
                "spearman": self.spearman,
                "top_k_overlap": self.top_k_overlap,
                "k": self.k,
                "flagged": self.flagged,
                "message": self.message,
            }
        )

    def rows(self) -> list[dict[str, Any]]:
        """One row: the agreement figures and whether they are flagged."""
        return [{k: v for k, v in self.to_dict().items() if k != "message"}]

    def __str__(self) -> str:
        return self.message


def disagreement(
    view_scores: Any,
    reference_scores: Any,
    *,
    k: int | None = None,
    min_spearman: float = 0.3,
    min_overlap: float = 0.5,
    protected: Any | None = None,
    view_name: str = "attention",
    reference_name: str = "reference",
) -> Disagreement:
    """Compare a view's token scores with a faithful reference; flag when rho or top-k overlap is low.

    The default thresholds are deliberately loose: a rank correlation under 0.3, or fewer than half of
    the reference's top-k tokens among the view's top-k, means the heatmap tells a different story.
    """
    view = np.asarray(view_scores, dtype=float)
    n_free = len(view) if protected is None else int((~np.asarray(protected, dtype=bool)).sum())
    kk = k if k is not None else max(1, min(5, n_free // 3))
    rho = spearman(view, reference_scores, protected=protected)
    overlap = top_k_overlap(view, reference_scores, kk, protected=protected)
    flagged = rho < min_spearman or overlap < min_overlap
    if flagged:
        message = (
            f"{view_name} disagrees with {reference_name}: Spearman {rho:.2f}, top-{kk} overlap {overlap:.0%}; "
            "do not read this heatmap as the model's reasons"
        )
    else:
        message = f"{view_name} agrees with {reference_name}: Spearman {rho:.2f}, top-{kk} overlap {overlap:.0%}"
    return Disagreement(rho, overlap, kk, bool(flagged), message)


@dataclass
class Diagnostics(Result):
    """Per-head entropy and sink mass of one record, with the heads that cross the warning thresholds."""

    kind: str
    entropy: np.ndarray
    special_mass: np.ndarray
    diffuse_heads: list[tuple[int, int]] = field(default_factory=list)
    sink_heads: list[tuple[int, int]] = field(default_factory=list)
    layer_ids: list[int] = field(default_factory=list)
    head_ids: list[int] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """One human-readable line per kind of problem found."""
        out = []
        total = self.entropy.size
        if self.sink_heads:
            out.append(
                f"{len(self.sink_heads)} of {total} heads put most of their attention on special tokens or "
                "separators (sink heads): their weights are not token importance"
            )
        if self.diffuse_heads:
            out.append(
                f"{len(self.diffuse_heads)} of {total} heads are nearly uniform (high entropy): "
                "they single out no token"
            )
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One row per head: its original layer and head numbers, entropy, special mass and flags."""
        diffuse, sinks = set(self.diffuse_heads), set(self.sink_heads)
        return [
            {
                "layer": layer,
                "head": head,
                "entropy": float(self.entropy[li, hi]),
                "special_mass": float(self.special_mass[li, hi]),
                "diffuse": (layer, head) in diffuse,
                "sink": (layer, head) in sinks,
            }
            for li, layer in enumerate(self.layer_ids)
            for hi, head in enumerate(self.head_ids)
        ]

    def __str__(self) -> str:
        flagged = [r for r in self.rows() if r["diffuse"] or r["sink"]]
        lines = [f"{self.kind} attention: {len(self.layer_ids)} layers x {len(self.head_ids)} heads"]
        lines += self.warnings or ["no diffuse or sink heads"]
        return "\n".join(lines) + ("\n" + format_table(flagged) if flagged else "")

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON and HTML templates; head positions use the original layer/head numbers."""
        return {
            "kind": self.kind,
            "layer_ids": self.layer_ids,
            "head_ids": self.head_ids,
            "entropy": self.entropy.astype(float).round(4).tolist(),
            "special_mass": self.special_mass.astype(float).round(4).tolist(),
            "diffuse_heads": [list(h) for h in self.diffuse_heads],
            "sink_heads": [list(h) for h in self.sink_heads],
            "warnings": self.warnings,
        }


def diagnose(
    record: AttentionRecord,
    kind: str | None = None,
    *,
    diffuse_threshold: float = 0.9,
    sink_threshold: float = 0.5,
    separators: Iterable[str] = SEPARATORS,
) -> Diagnostics:
    """Entropy and special-token mass of every head of one record, with diffuse and sink heads listed."""
    kind = kind or record.default_kind
    ent = head_entropy(record, kind)
    mass = special_token_mass(record, kind, separators)
    layer_ids, head_ids = record.layer_ids(kind), record.head_ids(kind)

    def heads(where: np.ndarray) -> list[tuple[int, int]]:
        return [(layer_ids[li], head_ids[hi]) for li, hi in zip(*np.nonzero(where))]

    return Diagnostics(
        kind=kind,
        entropy=ent,
        special_mass=mass,
        diffuse_heads=heads(ent >= diffuse_threshold),
        sink_heads=heads(mass >= sink_threshold),
        layer_ids=layer_ids,
        head_ids=head_ids,
    )
