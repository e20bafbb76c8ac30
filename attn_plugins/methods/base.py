"""Method base class: what a method needs from a record, its token-by-token matrix, and row selection."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError, MissingCaptureError
from ..record import AttentionRecord

Position = str | int | Sequence[int]

# How to obtain each optional record field, for MissingCaptureError messages.
CAPTURE_HINTS = {
    "gradients": "ap.capture(..., gradients=True, gradient_target=...)",
    "value_norms": "ap.capture(..., value_norms=True) (the 'huggingface' AttentionInterface adapter)",
    "values": "ap.capture(..., values=True)",
}


class Method:
    """An attribution method over attention: ``matrix(record)`` is [queries, keys], ``method(record)`` a row."""

    name: str = "method"
    # Optional record fields the method reads, e.g. ("gradients",) or ("value_norms",).
    requires: tuple[str, ...] = ()
    # Attention kinds the method is defined on.
    kinds: tuple[str, ...] = ("self", "encoder", "decoder", "cross")
    description: str = ""

    # ------------------------------------------------------------------ contract
    def matrix(self, record: AttentionRecord, kind: str | None = None, **opts: Any) -> np.ndarray:
        """Token-by-token scores [queries, keys] of one attention kind."""
        raise InputError(f"method {self.name!r} defines no token-by-token matrix")

    def __call__(
        self, record: AttentionRecord, position: Position = "first", kind: str | None = None, **opts: Any
    ) -> np.ndarray:
        """Scores over key tokens for the query ``position`` ([keys], or [rows, keys] for several rows)."""
        kind = self.resolve_kind(record, kind)
        self.check_options(self.matrix, opts)
        m = self.matrix(record, kind=kind, **opts)
        return select_rows(m, position, record, kind)

    def check_options(self, fn: Any, opts: dict[str, Any]) -> None:
        """InputError naming the method's options when ``opts`` holds one it does not take."""
        params = inspect.signature(fn).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        known = [n for n in params if n not in ("self", "record", "kind", "position")]
        unknown = sorted(set(opts) - set(known))
        if unknown:
            raise InputError(
                f"method {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options are {', '.join(known) or 'none'}"
            )

    # ------------------------------------------------------------------ helpers for subclasses
    def resolve_kind(self, record: AttentionRecord, kind: str | None) -> str:
        """The kind to use: the one asked for, else cross attention when present, else the record's default."""
        if not isinstance(record, AttentionRecord):
            raise InputError(f"method {self.name!r} needs an AttentionRecord, got {type(record).__name__}")
        if kind is None:
            kind = "cross" if "cross" in record.attentions and "cross" in self.kinds else record.default_kind
        if kind not in record.attentions:
            raise InputError(f"the record has no {kind!r} attention; it holds {', '.join(record.kinds)}")
        if kind not in self.kinds:
            raise InputError(f"method {self.name!r} is defined on {', '.join(self.kinds)} attention, not {kind!r}")
        return kind

    def require(self, record: AttentionRecord, field: str, kind: str) -> torch.Tensor:
        """The optional per-kind tensor ``field`` of ``kind``, or MissingCaptureError naming the capture option."""
        store = getattr(record, field)
        if kind not in store:
            hint = CAPTURE_HINTS.get(field, f"capture with {field}=True")
            raise MissingCaptureError(
                f"method {self.name!r} needs record.{field}[{kind!r}], which this record lacks; capture with {hint}"
            )
        return store[kind].detach().to(torch.float64)

    def info(self) -> dict[str, Any]:
        """Name, requirements and kinds, for listings."""
        return {"name": self.name, "requires": list(self.requires), "kinds": list(self.kinds)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def attention(record: AttentionRecord, kind: str) -> torch.Tensor:
    """The attention of ``kind`` as float64 [L, H, Q, K] (float64 keeps long products exact enough)."""
    return record.attentions[kind].detach().to(torch.float64)


def pick_layers(n_layers: int, layers: int | Sequence[int] | None) -> list[int]:
    """Layer positions from an int, a sequence (negatives allowed) or None (all), checked against the range."""
    if layers is None:
        return list(range(n_layers))
    chosen = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    if not chosen:
        raise InputError("layers: the selection is empty")
    out = []
    for i in chosen:
        if not -n_layers <= int(i) < n_layers:
            raise InputError(f"layers: index {i} out of range for {n_layers} layers")
        out.append(int(i) % n_layers)
    return out


def pick_heads(n_heads: int, heads: int | Sequence[int] | None) -> list[int]:
    """Head positions, like :func:`pick_layers`."""
    try:
        return pick_layers(n_heads, heads)
    except InputError as exc:
        raise InputError(str(exc).replace("layers", "heads")) from None


def reduce_heads(att: torch.Tensor, how: str) -> torch.Tensor:
    """Combine the head axis (dim 1 of [L, H, Q, K]) by mean, max, min or sum."""
    if how == "mean":
        return att.mean(1)
    if how == "max":
        return att.amax(1)
    if how == "min":
        return att.amin(1)
    if how == "sum":
        return att.sum(1)
    raise InputError(f"head reduction must be 'mean', 'max', 'min' or 'sum', not {how!r}")


def square(att: torch.Tensor, kind: str, method: str) -> None:
    """Propagation through layers needs queries == keys; a generation suffix record does not have it."""
    if att.shape[-2] != att.shape[-1]:
        raise InputError(
            f"method {method!r} propagates through layers and needs as many queries as keys; the {kind!r} "
            f"attention is {att.shape[-2]}x{att.shape[-1]} (capture the full sequence, not a generation suffix)"
        )


def generated_rows(record: AttentionRecord, kind: str, n_rows: int) -> np.ndarray:
    """Query rows that predict generated tokens: decoder rows but the last; causal rows from the prompt's end."""
    if kind in ("decoder", "cross"):
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


def select_rows(m: np.ndarray, position: Position, record: AttentionRecord, kind: str) -> np.ndarray:
    """One row (first, last, an index), the mean row, or several rows (indices or the generated tokens)."""
    n = m.shape[0]
    if isinstance(position, str):
        if position == "first":
            return m[0]
        if position == "last":
            return m[-1]
        if position == "mean":
            return m.mean(0)
        if position == "generated":
            return m[generated_rows(record, kind, n)]
        raise InputError(f"position must be 'first', 'last', 'mean', 'generated' or a token index, not {position!r}")
    if isinstance(position, (int, np.integer)):
        if not -n <= int(position) < n:
            raise InputError(f"position {position} out of range for {n} query tokens")
        return m[int(position)]
    rows = list(position)
    if not rows:
        raise InputError("position: the list of query rows is empty")
    for r in rows:
        if not isinstance(r, (int, np.integer)) or not -n <= int(r) < n:
            raise InputError(f"position {r!r} out of range for {n} query tokens")
    return m[np.asarray(rows, dtype=int)]


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """Detach a tensor to a float64 NumPy array."""
    return t.detach().to(torch.float64).cpu().numpy()
