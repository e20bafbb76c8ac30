"""The one table of attention kinds: which tokens each kind's queries and keys run over.

Every place that cuts, aggregates, splits or streams attention by kind reads this table; nothing else
spells out that cross attention's queries are the decoder side and its keys the encoder side.
"""

from __future__ import annotations

from ..errors import RecordValidationError

KINDS = ("self", "encoder", "decoder", "cross")

# kind -> (query side, key side); "source" is ``record.tokens``, "target" is ``record.target_tokens``.
SIDES: dict[str, tuple[str, str]] = {
    "self": ("source", "source"),
    "encoder": ("source", "source"),
    "decoder": ("target", "target"),
    "cross": ("target", "source"),
}

# Kinds whose queries and keys are the same tokens (propagation through layers is defined on them).
SQUARE_KINDS = tuple(k for k, (q, key) in SIDES.items() if q == key)

# Optional per-kind tensors, each indexed [layers, heads, ...] like the attentions, and the side(s) their
# axes after [layers, heads] run over: "query" or "key".
TENSOR_AXES: dict[str, tuple[str, ...]] = {
    "values": ("key",),  # [L, H, K, d]
    "value_norms": ("key",),  # [L, H, K]
    "queries": ("query",),  # [L, H, Q, d]
    "keys": ("key",),  # [L, H, K, d]
    "gradients": ("query", "key"),  # [L, H, Q, K]: d(target)/d(attention probabilities)
    # [L, H, Q]: the share of each row that went to no token (learned attention sinks, gpt-oss): rows of
    # the attention keep the model's exact weights and sum to 1 - sink_mass.
    "sink_mass": ("query",),
}
TENSOR_FIELDS = tuple(TENSOR_AXES)
# Fields whose last axis is a feature vector (head dimension) after the token axes: their rank is
# 2 + len(axes) + 1; the others end with their token axes.
FEATURE_FIELDS = ("values", "queries", "keys")


def tensor_rank(field: str) -> int:
    """The rank an optional per-kind tensor ``field`` has: [layers, heads, token axes..., (feature)]."""
    return 2 + len(TENSOR_AXES[field]) + (1 if field in FEATURE_FIELDS else 0)


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`; else RecordValidationError listing them."""
    if kind not in SIDES:
        raise RecordValidationError("attentions", f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    return kind


def sides(kind: str) -> tuple[str, str]:
    """(query side, key side) of ``kind``: each ``"source"`` or ``"target"``."""
    return SIDES[check_kind(kind)]


def by_side(kind: str, source: object, target: object) -> tuple[object, object]:
    """(query thing, key thing) of ``kind``, picking ``source`` or ``target`` for each side."""
    pick = {"source": source, "target": target}
    q, k = sides(kind)
    return pick[q], pick[k]
