"""AttentionRecord: the one schema every adapter writes and every method and view reads."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from ..errors import RecordValidationError
from .kinds import KINDS, SIDES, TENSOR_AXES, TENSOR_FIELDS, by_side, tensor_rank
from .numbering import Selection, choose

# 2: ``sink_mass`` (learned attention sinks) became a field of its own; version-1 files are still read.
SCHEMA_VERSION = 2


def _default_meta() -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION}


def row_tolerance(dtype: torch.dtype) -> float:
    """How far a row of ``dtype`` weights may sum from 1: two units of the dtype's precision, at least 1e-4.

    Rounding each weight of a softmax row moves its sum by up to eps/2 (the weights are positive and sum
    to 1), and renormalizing or re-rounding after a transformation adds as much again: float16 2e-3,
    bfloat16 1.6e-2; float32 rows are held to 1e-4 (long rows accumulate the softmax's own error).
    """
    return max(1e-4, 2 * float(torch.finfo(dtype).eps))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_word_id(value: Any) -> bool:
    return value is None or (_is_int(value) and value >= 0)


def _is_offset(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(_is_int(v) for v in value)
        and 0 <= value[0] <= value[1]
    )


def _is_flag(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1))


_EXPECTED = {
    _is_word_id: "expected a non-negative integer or None",
    _is_offset: "expected a (start, end) pair of integers with 0 <= start <= end",
    _is_flag: "expected true or false",
}


@dataclass
class AttentionRecord:
    """Attention of one example: tokens, per-kind weights ``[layers, heads, queries, keys]``, metadata.

    Only ``tokens`` and ``attentions`` are required. Kinds are ``"self"`` for single-stack models and
    ``"encoder"``, ``"decoder"``, ``"cross"`` for encoder-decoder models, where ``tokens`` is the source
    (encoder) side and ``target_tokens`` the decoder side.
    """

    tokens: list[str]
    attentions: dict[str, torch.Tensor]
    target_tokens: list[str] | None = None
    word_ids: list[int | None] | None = None
    target_word_ids: list[int | None] | None = None
    offsets: list[tuple[int, int]] | None = None
    special_tokens_mask: list[bool] | None = None
    target_special_tokens_mask: list[bool] | None = None
    text: str | None = None
    target_text: str | None = None
    # Per-kind optional captures: values [L,H,K,d], value_norms [L,H,K], queries [L,H,Q,d],
    # keys [L,H,K,d], gradients [L,H,Q,K] (d(target)/d(attention probabilities)).
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    value_norms: dict[str, torch.Tensor] = field(default_factory=dict)
    queries: dict[str, torch.Tensor] = field(default_factory=dict)
    keys: dict[str, torch.Tensor] = field(default_factory=dict)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    # Per-kind [L,H,Q]: the share of each row that learned attention sinks took (gpt-oss). Rows then keep
    # the model's exact weights and sum to 1 - sink_mass; methods read the sink as mass that reaches no token.
    sink_mass: dict[str, torch.Tensor] = field(default_factory=dict)
    # Model output for this example, e.g. {"logits": tensor}; free-form tensors.
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    # Method- or plugin-specific tensors captured on request (e.g. ALTI contributions); free-form.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=_default_meta)

    def __post_init__(self) -> None:
        # Token sequences become lists of strings; anything else is left for check_structure() to name.
        if isinstance(self.tokens, (list, tuple)):
            self.tokens = [str(t) for t in self.tokens]
        if isinstance(self.target_tokens, (list, tuple)):
            self.target_tokens = [str(t) for t in self.target_tokens]
        if self.meta is None or isinstance(self.meta, dict):
            self.meta = {"schema_version": SCHEMA_VERSION, **(self.meta or {})}

    # ------------------------------------------------------------------ shape helpers
    @property
    def kinds(self) -> list[str]:
        """The attention kinds this record holds, in canonical order."""
        return [k for k in KINDS if k in self.attentions]

    @property
    def default_kind(self) -> str:
        """``"self"`` for single-stack records, ``"encoder"`` for encoder-decoder ones."""
        for kind in KINDS:
            if kind in self.attentions:
                return kind
        raise RecordValidationError("attentions", "the record holds no attention")

    @property
    def num_layers(self) -> int:
        """Number of layers of the default kind."""
        return int(self.attentions[self.default_kind].shape[0])

    @property
    def num_heads(self) -> int:
        """Number of heads of the default kind."""
        return int(self.attentions[self.default_kind].shape[1])

    def axes(self, kind: str | None = None) -> tuple[list[str], list[str]]:
        """(query tokens, key tokens) of one kind."""
        target = self.target_tokens if self.target_tokens is not None else []
        return by_side(kind or self.default_kind, self.tokens, target)

    def layer_ids(self, kind: str | None = None) -> list[int]:
        """Original layer numbers of the stored layers (they differ after a selection)."""
        kind = kind or self.default_kind
        stored = self.meta.get("layers", {}).get(kind)
        return list(stored) if stored is not None else list(range(self.attentions[kind].shape[0]))

    def head_ids(self, kind: str | None = None) -> list[int]:
        """Original head numbers of the stored heads."""
        kind = kind or self.default_kind
        stored = self.meta.get("heads", {}).get(kind)
        return list(stored) if stored is not None else list(range(self.attentions[kind].shape[1]))

    # ------------------------------------------------------------------ validation
    def validate(self, atol: float | None = None) -> AttentionRecord:
        """Check types, shapes, finiteness, row sums and causality; raise RecordValidationError naming the field.

        Rows must sum to 1 within ``atol`` (default: :func:`row_tolerance` of the attention's dtype), rows
        plus their ``sink_mass`` when the model has attention sinks; a record made with
        ``drop_special_tokens(renormalize=False)`` only needs rows of at most that.
        """
        self.check_structure()
        for kind, att in self.attentions.items():
            self._validate_weights(kind, att, atol)
        self._validate_tensor_values()
        return self

    def check_structure(self) -> AttentionRecord:
        """Check every field's type and every shape against the tokens (not the values); return the record.

        The record transformations call it first, so a malformed record is a RecordValidationError naming
        the field rather than an indexing error from deep inside.
        """
        self._check_token_fields()
        if not isinstance(self.attentions, dict) or not self.attentions:
            raise RecordValidationError("attentions", "must be a non-empty mapping from kind to tensor")
        for kind in self.attentions:
            if kind not in KINDS:
                raise RecordValidationError(f"attentions[{kind!r}]", f"unknown kind; kinds are {', '.join(KINDS)}")
        if any("target" in SIDES[k] for k in self.attentions) and not self.target_tokens:
            raise RecordValidationError("target_tokens", "decoder and cross attention need target_tokens")
        for kind, att in self.attentions.items():
            self._check_attention_shape(kind, att)
        self._check_token_lists()
        self._check_optional_tensors()
        self._check_meta()
        return self

    def _check_token_fields(self) -> None:
        if not isinstance(self.tokens, list) or len(self.tokens) == 0:
            raise RecordValidationError("tokens", "must be a non-empty list of strings")
        for name in ("tokens", "target_tokens"):
            value = getattr(self, name)
            if value is None and name == "target_tokens":
                continue
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise RecordValidationError(name, "must be a list of strings")
        for name in ("text", "target_text"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise RecordValidationError(name, f"must be a string or None, got {type(value).__name__}")

    def _check_attention_shape(self, kind: str, att: Any) -> None:
        name = f"attentions[{kind!r}]"
        if not isinstance(att, torch.Tensor):
            raise RecordValidationError(name, f"must be a torch.Tensor, got {type(att).__name__}")
        if att.dim() != 4:
            raise RecordValidationError(
                name, f"must have rank 4 [layers, heads, queries, keys], got shape {tuple(att.shape)}"
            )
        if not att.is_floating_point():
            raise RecordValidationError(name, f"must be floating point, got {att.dtype}")
        if att.shape[0] == 0 or att.shape[1] == 0:
            raise RecordValidationError(name, f"holds no layer or no head: shape {tuple(att.shape)}")
        q_tokens, k_tokens = self.axes(kind)
        if att.shape[2] != len(q_tokens) or att.shape[3] != len(k_tokens):
            raise RecordValidationError(
                name,
                f"shape {tuple(att.shape)} does not match {len(q_tokens)} query and {len(k_tokens)} key tokens",
            )

    def _validate_weights(self, kind: str, att: torch.Tensor, atol: float | None) -> None:
        name = f"attentions[{kind!r}]"
        a = att.detach().float()
        if not torch.isfinite(a).all():
            raise RecordValidationError(name, "contains NaN or infinite values")
        if (a < -1e-6).any():
            raise RecordValidationError(name, f"contains negative weights (min {a.min().item():.3g})")
        tol = atol if atol is not None else row_tolerance(att.dtype)
        computed = getattr(torch, str(self.meta.get("weights_dtype", "")), None)
        if atol is None and isinstance(computed, torch.dtype):
            # Weights computed in a coarser dtype (a half-precision model) carry its rounding into the record.
            tol = max(tol, row_tolerance(computed))
        sums = a.sum(-1)
        sink = self.sink_mass.get(kind)
        if sink is not None:
            # Learned sinks take part of each row's softmax mass: rows plus the sink's share sum to 1.
            s = sink.detach().float()
            if not ((s >= -1e-6) & (s <= 1 + 1e-6)).all():
                raise RecordValidationError(f"sink_mass[{kind!r}]", "a share of a row must lie within [0, 1]")
            sums = sums + s
            tol = max(tol, row_tolerance(sink.dtype)) if atol is None else tol
        if self.meta.get("renormalized") is False:
            # Special tokens were dropped without renormalizing: rows keep what they had, at most 1.
            worst = (sums - 1).clamp_min(0).max().item()
        else:
            worst = (sums - 1).abs().max().item()
        if worst > tol:
            raise RecordValidationError(name, f"rows must sum to 1 (worst row is off by {worst:.3g})")
        if self.is_causal(kind):
            future = torch.triu(a, diagonal=1).abs().max().item()
            if future > tol:
                raise RecordValidationError(name, f"causal rows put weight {future:.3g} on future tokens")

    def is_causal(self, kind: str | None = None) -> bool:
        """Whether queries of this kind may only see keys at or before their position."""
        kind = kind or self.default_kind
        if kind == "decoder":
            return True
        return kind == "self" and self.meta.get("causal", False) is True

    def _check_token_lists(self) -> None:
        pairs = [
            ("word_ids", self.word_ids, self.tokens, _is_word_id),
            ("offsets", self.offsets, self.tokens, _is_offset),
            ("special_tokens_mask", self.special_tokens_mask, self.tokens, _is_flag),
            ("target_word_ids", self.target_word_ids, self.target_tokens, _is_word_id),
            ("target_special_tokens_mask", self.target_special_tokens_mask, self.target_tokens, _is_flag),
        ]
        for name, values, tokens, valid in pairs:
            if values is None:
                continue
            if not isinstance(values, (list, tuple)):
                raise RecordValidationError(name, f"must be a list, got {type(values).__name__}")
            if tokens is None or len(values) != len(tokens):
                n = 0 if tokens is None else len(tokens)
                raise RecordValidationError(name, f"has {len(values)} entries for {n} tokens")
            bad = next((i for i, v in enumerate(values) if not valid(v)), None)
            if bad is not None:
                raise RecordValidationError(name, f"entry {bad} is {values[bad]!r}, {_EXPECTED[valid]}")

    def _check_optional_tensors(self) -> None:
        for fname in ("outputs", "extras"):
            store = getattr(self, fname)
            if not isinstance(store, dict):
                raise RecordValidationError(fname, f"must be a mapping of tensors, got {type(store).__name__}")
            for key, t in store.items():
                if not isinstance(t, torch.Tensor):
                    raise RecordValidationError(f"{fname}[{key!r}]", f"must be a tensor, got {type(t).__name__}")
        for fname in TENSOR_AXES:
            store = getattr(self, fname)
            if not isinstance(store, dict):
                raise RecordValidationError(fname, f"must be a mapping from kind to tensor, got {type(store).__name__}")
            for kind in store:
                self._check_tensor_shape(fname, kind)

    def _check_tensor_shape(self, fname: str, kind: str) -> torch.Tensor:
        t = getattr(self, fname)[kind]
        name = f"{fname}[{kind!r}]"
        if kind not in self.attentions:
            raise RecordValidationError(name, f"kind {kind!r} has no attentions")
        att = self.attentions[kind]
        rank = tensor_rank(fname)
        if not isinstance(t, torch.Tensor) or t.dim() != rank or t.shape[:2] != att.shape[:2]:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise RecordValidationError(
                name, f"must be rank {rank}, starting with [layers, heads] = {tuple(att.shape[:2])}, got {shape}"
            )
        if not t.is_floating_point():
            raise RecordValidationError(name, f"must be floating point, got {t.dtype}")
        sizes = {"query": att.shape[2], "key": att.shape[3]}
        for offset, axis in enumerate(TENSOR_AXES[fname]):
            if t.shape[2 + offset] != sizes[axis]:
                raise RecordValidationError(
                    name, f"has {t.shape[2 + offset]} {axis} positions for {sizes[axis]} {axis}s"
                )
        return t

    def check_attention(self, kind: str) -> torch.Tensor:
        """The attention of ``kind``, checked for what a method reads: a finite, floating-point
        ``[layers, heads, queries, keys]`` tensor over this record's tokens (RecordValidationError otherwise)."""
        if not isinstance(self.attentions, dict) or kind not in self.attentions:
            raise RecordValidationError("attentions", f"the record has no {kind!r} attention")
        if kind not in KINDS:
            raise RecordValidationError(f"attentions[{kind!r}]", f"unknown kind; kinds are {', '.join(KINDS)}")
        if "target" in SIDES[kind] and not isinstance(self.target_tokens, list):
            raise RecordValidationError("target_tokens", f"{kind} attention needs target_tokens")
        if not isinstance(self.tokens, list):
            raise RecordValidationError("tokens", "must be a non-empty list of strings")
        att = self.attentions[kind]
        self._check_attention_shape(kind, att)
        if not torch.isfinite(att.detach()).all():
            raise RecordValidationError(f"attentions[{kind!r}]", "contains NaN or infinite values")
        return att

    def check_tensor(self, field: str, kind: str) -> torch.Tensor:
        """The optional tensor ``field`` (``gradients``, ``value_norms``, ...) of ``kind``, checked for shape
        against the attention and for finite values (RecordValidationError naming it otherwise)."""
        self.check_attention(kind)
        t = self._check_tensor_shape(field, kind)
        if not torch.isfinite(t.detach()).all():
            raise RecordValidationError(f"{field}[{kind!r}]", "contains NaN or infinite values")
        return t

    def _check_meta(self) -> None:
        meta = self.meta
        if not isinstance(meta, dict):
            raise RecordValidationError("meta", f"must be a mapping, got {type(meta).__name__}")
        version = meta.get("schema_version")
        if not _is_int(version) or not 1 <= version <= SCHEMA_VERSION:
            raise RecordValidationError(
                "meta['schema_version']", f"must be an integer from 1 to {SCHEMA_VERSION}, got {version!r}"
            )
        if "causal" in meta and not isinstance(meta["causal"], bool):
            raise RecordValidationError("meta['causal']", f"must be true or false, got {meta['causal']!r}")
        for key in ("prompt_length",):
            if key in meta and not (_is_int(meta[key]) and meta[key] >= 0):
                raise RecordValidationError(f"meta[{key!r}]", f"must be a non-negative integer, got {meta[key]!r}")
        for key, axis in (("layers", 0), ("heads", 1)):
            if key not in meta:
                continue
            stored = meta[key]
            if not isinstance(stored, dict):
                raise RecordValidationError(f"meta[{key!r}]", f"must map kinds to {key[:-1]} numbers")
            for kind, ids in stored.items():
                name = f"meta[{key!r}][{kind!r}]"
                if kind not in self.attentions:
                    raise RecordValidationError(name, f"kind {kind!r} has no attentions")
                n = self.attentions[kind].shape[axis]
                if not isinstance(ids, list) or len(ids) != n or not all(_is_int(i) and i >= 0 for i in ids):
                    raise RecordValidationError(name, f"must list {n} non-negative {key[:-1]} numbers")

    def _validate_tensor_values(self) -> None:
        for fname in TENSOR_FIELDS:
            for kind, t in getattr(self, fname).items():
                if not torch.isfinite(t.detach()).all():
                    raise RecordValidationError(f"{fname}[{kind!r}]", "contains NaN or infinite values")
        for kind, t in self.value_norms.items():
            if (t.detach() < 0).any():
                raise RecordValidationError(f"value_norms[{kind!r}]", "norms cannot be negative")
        for fname in ("outputs", "extras"):
            for key, t in getattr(self, fname).items():
                if t.is_floating_point() and torch.isnan(t.detach()).any():
                    raise RecordValidationError(f"{fname}[{key!r}]", "contains NaN values")

    # ------------------------------------------------------------------ transformations
    def _replace(self, **changes: Any) -> AttentionRecord:
        new = copy.copy(self)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (dict, list)):
                setattr(new, f.name, copy.copy(value))
        new.meta = copy.deepcopy(self.meta)
        for key, value in changes.items():
            setattr(new, key, value)
        return new

    def select(self, layers: Selection = None, heads: Selection = None) -> AttentionRecord:
        """A record with only the given layers and heads (original numbers, negatives from the end)."""
        self.check_structure()
        new = self._replace()
        meta_layers = dict(self.meta.get("layers", {}))
        meta_heads = dict(self.meta.get("heads", {}))
        for kind, att in self.attentions.items():
            orig_l, orig_h = self.layer_ids(kind), self.head_ids(kind)
            li = torch.tensor(choose(layers, orig_l, "layer"))
            hi = torch.tensor(choose(heads, orig_h, "head"))
            new.attentions[kind] = att.index_select(0, li).index_select(1, hi)
            for fname in TENSOR_FIELDS:
                store = getattr(new, fname)
                if kind in store:
                    store[kind] = store[kind].index_select(0, li).index_select(1, hi)
            meta_layers[kind] = [orig_l[i] for i in li.tolist()]
            meta_heads[kind] = [orig_h[i] for i in hi.tolist()]
        new.meta["layers"], new.meta["heads"] = meta_layers, meta_heads
        return new

    def drop_special_tokens(self, renormalize: bool = True) -> AttentionRecord:
        """A record without special tokens on either axis; rows are renormalized to sum to 1 by default.

        Renormalizing runs in float32 and casts back, so float16 rows whose kept mass is tiny (even a
        subnormal) still sum to 1; a row that kept no weight at all is a RecordValidationError naming it,
        unless a learned sink took its whole mass (``sink_mass`` 1): that row stays zero, as it was captured.
        """
        self.check_structure()
        src_keep = _keep_mask(self.special_tokens_mask, len(self.tokens), "special_tokens_mask")
        tgt_keep = None
        if self.target_tokens is not None:
            tgt_keep = _keep_mask(
                self.target_special_tokens_mask, len(self.target_tokens), "target_special_tokens_mask"
            )
        new = self._replace()
        for kind, att in self.attentions.items():
            qk, kk = by_side(kind, src_keep, tgt_keep)
            a = att[:, :, qk][:, :, :, kk]
            if renormalize:
                # With attention sinks the kept keys share what the sink left: rows sum to 1 - sink_mass.
                sink = self.sink_mass.get(kind)
                a = _renormalized(a, kind, None if sink is None else sink[:, :, qk])
            new.attentions[kind] = a
            keep = {"query": qk, "key": kk}
            for fname, axes in TENSOR_AXES.items():
                store = getattr(new, fname)
                if kind in store:
                    t = store[kind]
                    for offset, axis in enumerate(axes):
                        t = t.index_select(2 + offset, torch.nonzero(keep[axis]).flatten())
                    store[kind] = t

        def keep(seq: list | None, mask: torch.Tensor | None) -> list | None:
            if seq is None or mask is None:
                return seq
            return [s for s, k in zip(seq, mask.tolist()) if k]

        new.tokens = keep(self.tokens, src_keep)
        new.word_ids = keep(self.word_ids, src_keep)
        new.offsets = keep(self.offsets, src_keep)
        new.special_tokens_mask = keep(self.special_tokens_mask, src_keep)
        if tgt_keep is not None:
            new.target_tokens = keep(self.target_tokens, tgt_keep)
            new.target_word_ids = keep(self.target_word_ids, tgt_keep)
            new.target_special_tokens_mask = keep(self.target_special_tokens_mask, tgt_keep)
        new.meta["special_tokens_dropped"] = True
        new.meta["renormalized"] = bool(renormalize)
        return new

    def aggregate_words(self) -> AttentionRecord:
        """A record over words instead of sub-word tokens.

        Rule: weights are **summed over keys** (a word receives the attention of all its pieces, so
        rows still sum to 1) and **averaged over queries** (a word attends as the mean of its pieces).
        Tokens without a word id (special tokens) stay units of their own. Word strings are cut from
        ``text`` with ``offsets`` when both are known, else the pieces are joined without their
        sub-word markers (``##``, ``Ġ``, ``▁``). Optional tensors and extras (not ``outputs``) are dropped,
        as they have no word-level meaning, except the sink mass (averaged over queries like the rows).
        """
        self.check_structure()
        if self.word_ids is None:
            raise RecordValidationError("word_ids", "aggregating into words needs word_ids from the tokenizer")
        src_m, src_words = _word_matrix(self.tokens, self.word_ids, self.offsets, self.text)
        tgt_m = tgt_words = None
        if self.target_tokens is not None:
            if self.target_word_ids is None and any("target" in SIDES[k] for k in self.attentions):
                raise RecordValidationError("target_word_ids", "aggregating the decoder side needs target_word_ids")
            if self.target_word_ids is not None:
                tgt_m, tgt_words = _word_matrix(self.target_tokens, self.target_word_ids, None, self.target_text)
        new = self._replace()
        for fname in (*TENSOR_FIELDS, "extras"):
            setattr(new, fname, {})
        for kind, att in self.attentions.items():
            qm, km = by_side(kind, src_m, tgt_m)
            a = att.float()
            qmean = qm / qm.sum(1, keepdim=True)
            agg = torch.einsum("wq,lhqk,vk->lhwv", qmean, a, km)
            new.attentions[kind] = agg.to(att.dtype)
            if kind in self.sink_mass:  # a word's row is the mean of its pieces' rows, sink share included
                sink = self.sink_mass[kind]
                new.sink_mass[kind] = torch.einsum("wq,lhq->lhw", qmean, sink.float()).to(sink.dtype)
        new.tokens = src_words
        new.word_ids = list(range(len(src_words)))
        new.offsets = None
        new.special_tokens_mask = _agg_mask(self.special_tokens_mask, src_m)
        if tgt_words is not None:
            new.target_tokens = tgt_words
            new.target_word_ids = list(range(len(tgt_words)))
            new.target_special_tokens_mask = _agg_mask(self.target_special_tokens_mask, tgt_m)
        new.meta["aggregated"] = "words"
        return new

    def to(self, dtype: torch.dtype) -> AttentionRecord:
        """A copy with attention and optional tensors cast to ``dtype`` (e.g. float16 to save space)."""
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise RecordValidationError("dtype", f"records hold floating-point weights; cannot cast to {dtype!r}")
        self.check_structure()
        new = self._replace()
        new.attentions = {k: v.to(dtype) for k, v in self.attentions.items()}
        for fname in TENSOR_FIELDS:
            setattr(new, fname, {k: v.to(dtype) for k, v in getattr(self, fname).items()})
        new.meta["dtype"] = str(dtype).replace("torch.", "")
        return new

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.attentions.items())
        extra = f", target_tokens={len(self.target_tokens)}" if self.target_tokens is not None else ""
        model = self.meta.get("model_type")
        return (
            f"AttentionRecord(tokens={len(self.tokens)}{extra}, attentions[{shapes}]"
            + (f", model_type={model!r}" if model else "")
            + ")"
        )


def _keep_mask(mask: list[bool] | None, n: int, name: str) -> torch.Tensor:
    if mask is None:
        raise RecordValidationError(name, "dropping special tokens needs the special tokens mask")
    keep = ~torch.tensor([bool(m) for m in mask], dtype=torch.bool)
    if keep.numel() != n:
        raise RecordValidationError(name, f"has {keep.numel()} entries for {n} tokens")
    if not keep.any():
        raise RecordValidationError(name, "every token is special; nothing would remain")
    return keep


def _renormalized(a: torch.Tensor, kind: str, sink: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of ``a`` [L, H, Q, K] scaled to sum to 1 (to ``1 - sink`` given the sink mass [L, H, Q]), in float32.

    A row whose whole mass went to the sink (``sink`` 1: exact weights, or a share of 0.9999 rounded in
    float16) has nothing left to share and stays zero: its mass is still the sink's, never NaN.
    """
    a32 = a.float()
    sums = a32.sum(-1, keepdim=True)
    left = torch.ones_like(sums) if sink is None else (1 - sink.float()).clamp_min(0).unsqueeze(-1)
    empty = ((sums == 0) & (left > 0)).squeeze(-1)
    if empty.any():
        layer, head, row = (int(i) for i in torch.nonzero(empty)[0])
        raise RecordValidationError(
            f"attentions[{kind!r}]",
            f"row {row} of layer {layer}, head {head} put all its weight on special tokens; it cannot be "
            "renormalized without them (use renormalize=False)",
        )
    scale = torch.where(left > 0, left / sums.masked_fill(sums == 0, 1), torch.zeros_like(sums))
    return (a32 * scale).to(a.dtype)


_MARKERS = ("##", "Ġ", "▁", "Ċ")


def _strip_marker(piece: str) -> str:
    for m in _MARKERS:
        if piece.startswith(m):
            return piece[len(m) :]
    return piece


def _word_matrix(
    tokens: list[str],
    word_ids: list[int | None],
    offsets: list[tuple[int, int]] | None,
    text: str | None,
) -> tuple[torch.Tensor, list[str]]:
    """One-hot matrix [words, tokens] grouping consecutive tokens with the same word id, and word strings."""
    if len(word_ids) != len(tokens):
        raise RecordValidationError("word_ids", f"has {len(word_ids)} entries for {len(tokens)} tokens")
    # A new unit starts at a token whose word id is None or differs from the previous token's.
    ids = np.array([-1 if w is None else int(w) for w in word_ids])
    starts = np.ones(len(ids), dtype=bool)
    starts[1:] = (ids[1:] != ids[:-1]) | (ids[1:] == -1)
    unit = np.cumsum(starts) - 1
    n_units = int(unit[-1]) + 1
    m = torch.zeros(n_units, len(tokens))
    m[torch.from_numpy(unit), torch.arange(len(tokens))] = 1.0
    words: list[str] = []
    for u in range(n_units):
        members = np.nonzero(unit == u)[0]
        first = members[0]
        if ids[first] == -1:
            words.append(tokens[first])
        elif offsets is not None and text is not None:
            words.append(text[offsets[first][0] : offsets[members[-1]][1]])
        else:
            words.append("".join(_strip_marker(tokens[i]) for i in members))
    return m, words


def _agg_mask(mask: list[bool] | None, m: torch.Tensor) -> list[bool] | None:
    if mask is None:
        return None
    t = torch.tensor([float(bool(x)) for x in mask])
    return [bool(v) for v in ((m @ t) > 0).tolist()]
