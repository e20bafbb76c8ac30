"""Streaming reducers: summarize attention one layer at a time, inside the capture, never holding all layers.

A full capture keeps ``layers x heads x N²`` weights per example, which at a few thousand tokens no
longer fits. A reducer instead receives each layer's probabilities as the model computes them, in
query blocks ``[batch, heads, rows, keys]`` of at most ``block_bytes`` (:meth:`Reducer.begin_layer`,
:meth:`Reducer.update_rows`, :meth:`Reducer.end_layer`; :meth:`Reducer.update` hands over a whole
layer), folds them into a small running state, and lets them go: the scores of one block are alive at
a time. Layers no reducer reads (``HeadReduce(layers=...)``, ``kinds=``) are not computed at all. :func:`stream` runs a model with
reducers attached through the Hugging Face adapter's capture context, so the probabilities are the same
ones a full capture records. Any adapter that can listen (:meth:`attn_plugins.adapters.Adapter.listen`)
serves, so streaming works for third-party adapters too.

Each reducer's per-example result equals the same reduction applied to a full record of that example
(padding removed):

* :class:`HeadReduce` - mean or max over heads, per layer ``[L, Q, K]`` or averaged over layers ``[Q, K]``;
* :class:`RolloutReducer` - attention rollout ``[Q, K]``, as the ``rollout`` method computes it;
* :class:`HeadEntropy` - mean row entropy per head ``[L, H]``, as :func:`attn_plugins.record.statistics.head_entropy`;
* :class:`TopK` - the k largest weights of every row and their key positions ``[L, H, Q, k]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..adapters import AttentionCall, CaptureOptions, check_selection, model_device, move_inputs
from ..errors import InputError, UnsupportedModelError
from ..record import SQUARE_KINDS
from ..record.kinds import sides
from ..record.selection import check_reduction, reduce_axis
from ..record.statistics import head_entropy_sums
from ..results import Result, plain
from .encoding import encode, encode_inputs
from .forward import select_adapter


@dataclass
class TopKResult:
    """The k largest weights of each row (``values``) and their key positions (``indices``), ``[L, H, Q, k]``."""

    values: np.ndarray
    indices: np.ndarray


class Reducer(ABC):
    """Base class: folds one layer's probabilities at a time, in query blocks, into per-example results.

    Subclasses implement :meth:`_fold` (state update for one whole layer of one kind) and :meth:`_finish`
    (one example's result from the state); a reducer that can fold query blocks as they come also
    overrides :meth:`_fold_rows` and :meth:`_end_layer` (else the blocks of a layer are assembled for
    :meth:`_fold`). ``kinds`` limits the attention kinds the reducer consumes; updates of other kinds are
    ignored so one reducer list can serve encoder-decoder models.
    """

    name: str = "reducer"
    # Whether every layer from 0 up must arrive (rollout is a product from the first layer up).
    needs_every_layer: bool = True

    def __init__(self, kinds: Sequence[str] | None = None) -> None:
        self.kinds = tuple(kinds) if kinds is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget every state, ready for a new batch."""
        self._state: dict[str, Any] = {}
        self._masks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._next_layer: dict[str, int] = {}
        self._open: dict[str, Any] = {}  # the layer being folded: (layer, shape, causal, per-layer state)

    def accepts(self, kind: str) -> bool:
        """Whether this reducer consumes attention of ``kind``."""
        return self.kinds is None or kind in self.kinds

    def wanted_layers(self) -> list[int] | None:
        """The layers this reducer reads (None: all); the others need not be computed."""
        return None

    def update(
        self,
        kind: str,
        layer: int,
        probs: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        query_mask: torch.Tensor | None = None,
        causal: bool = False,
        sink: torch.Tensor | None = None,
    ) -> None:
        """Fold layer ``layer`` of ``kind``: ``probs`` [B, H, Q, K], ``mask`` [B, K] (1 = real key).

        ``query_mask`` [B, Q] defaults to ``mask`` when queries and keys are the same tokens; layers of
        a kind must arrive in order 0, 1, 2, ... (rollout is a product from the first layer up).
        ``sink`` [B, H, Q]: the share of each row learned attention sinks took (None: rows sum to 1).
        """
        if probs.dim() != 4:
            raise InputError(
                f"reducer {self.name!r}: probs must be [batch, heads, queries, keys], got {tuple(probs.shape)}"
            )
        if self.begin_layer(kind, layer, tuple(probs.shape), mask, query_mask=query_mask, causal=causal):
            self.update_rows(kind, layer, 0, probs, sink)
            self.end_layer(kind, layer)

    def begin_layer(
        self,
        kind: str,
        layer: int,
        shape: tuple[int, ...],
        mask: torch.Tensor | None = None,
        *,
        query_mask: torch.Tensor | None = None,
        causal: bool = False,
        device: torch.device | str | None = None,
    ) -> bool:
        """Start layer ``layer`` of ``kind``, of ``shape`` [B, H, Q, K]; False if this reducer skips it."""
        if not self.accepts(kind):
            return False
        b, _, q, k = shape
        expected = self._next_layer.get(kind, 0)
        if layer < expected or (layer != expected and self.needs_every_layer):
            raise InputError(f"reducer {self.name!r}: {kind!r} layer {layer} arrived, expected layer {expected}")
        self._next_layer[kind] = layer + 1
        wanted = self.wanted_layers()
        if wanted is not None and layer not in wanted:
            return False
        device = device if device is not None else (mask.device if isinstance(mask, torch.Tensor) else "cpu")
        key_mask = _as_mask(mask, b, k, "mask", device)
        if query_mask is None:
            if q != k and mask is not None:
                raise InputError(f"reducer {self.name!r}: {q} queries and {k} keys need a query_mask")
            query_mask = key_mask if q == k else None
        q_mask = _as_mask(query_mask, b, q, "query_mask", device)
        if kind in self._masks:
            old_q, old_k = self._masks[kind]
            if old_q.shape != q_mask.shape or old_k.shape != key_mask.shape:
                raise InputError(f"reducer {self.name!r}: {kind!r} layers of one batch must share their shape")
        self._masks[kind] = (q_mask, key_mask)
        self._open[kind] = [layer, tuple(shape), causal, None, None]
        return True

    def update_rows(
        self, kind: str, layer: int, row0: int, probs: torch.Tensor, sink: torch.Tensor | None = None
    ) -> None:
        """Fold the query rows ``row0 ..`` of the open layer: ``probs`` [B, H, rows, K] (not kept), with the
        sinks' share of those rows ``sink`` [B, H, rows] when the model has learned sinks."""
        current = self._open.get(kind)
        if current is None or current[0] != layer:
            return  # a kind or layer this reducer skips
        q_mask, key_mask = self._masks[kind]
        rows = probs.shape[2]
        clean = probs.detach().float()
        q_rows = q_mask[:, row0 : row0 + rows]
        if not (bool(q_rows.all()) and bool(key_mask.all())):
            # Padding rows and columns may hold anything (uniform rows, NaN under additive masks): zero them
            # so they never leak into real rows through a product or a sum. Without padding, no copy is made.
            valid = q_rows[:, None, :, None] & key_mask[:, None, None, :]
            clean = torch.where(valid, clean, torch.zeros((), dtype=clean.dtype, device=clean.device))
        if sink is not None:
            self._fold_sink(kind, layer, row0, sink.detach().float() * q_rows[:, None, :], current)
        self._fold_rows(kind, layer, row0, clean, current)

    def end_layer(self, kind: str, layer: int) -> None:
        """Close the open layer of ``kind`` (after its last rows)."""
        current = self._open.pop(kind, None)
        if current is None or current[0] != layer:
            return
        q_mask, key_mask = self._masks[kind]
        self._end_layer(kind, layer, current, q_mask, key_mask)

    def results(self) -> list[dict[str, Any]]:
        """Per example, ``{kind: result}`` with padding removed (results are NumPy arrays on the CPU)."""
        if not self._masks:
            return []
        n = next(iter(self._masks.values()))[0].shape[0]
        out: list[dict[str, Any]] = [{} for _ in range(n)]
        for kind, (q_mask, k_mask) in self._masks.items():
            for b in range(n):  # one cut per example, not per token
                q_keep = torch.nonzero(q_mask[b], as_tuple=False).flatten()
                k_keep = torch.nonzero(k_mask[b], as_tuple=False).flatten()
                out[b][kind] = self._finish(kind, b, q_keep, k_keep)
        return out

    # ------------------------------------------------------------------ subclass contract
    def _fold_sink(self, kind: str, layer: int, row0: int, sink: torch.Tensor, current: list) -> None:
        """Take the sinks' share of a block of rows ``[B, H, rows]`` (padding rows zeroed). Default: not read."""
        return None

    def _fold_rows(self, kind: str, layer: int, row0: int, probs: torch.Tensor, current: list) -> None:
        """Fold a block of rows (padding zeroed); ``current[3]`` holds the layer's own state. Default: assemble."""
        if current[3] is None:
            current[3] = torch.zeros(current[1], dtype=probs.dtype, device=probs.device)
        current[3][:, :, row0 : row0 + probs.shape[2]] = probs

    def _end_layer(self, kind: str, layer: int, current: list, q_mask: torch.Tensor, k_mask: torch.Tensor) -> None:
        """Finish a layer whose rows were all folded. Default: :meth:`_fold` on the assembled layer."""
        self._fold(kind, layer, current[3], q_mask, k_mask, current[2])

    @abstractmethod
    def _fold(
        self, kind: str, layer: int, probs: torch.Tensor, q_mask: torch.Tensor, k_mask: torch.Tensor, causal: bool
    ) -> None:
        """Fold one whole layer (padding already zeroed) into the state."""

    @abstractmethod
    def _finish(self, kind: str, b: int, q_keep: torch.Tensor, k_keep: torch.Tensor) -> Any:
        """Example ``b``'s result, cut to its real query rows ``q_keep`` and key columns ``k_keep``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class _RowReducer(Reducer):
    """A built-in reducer that folds query blocks as they come; a whole layer is one block."""

    def _fold(
        self, kind: str, layer: int, probs: torch.Tensor, q_mask: torch.Tensor, k_mask: torch.Tensor, causal: bool
    ) -> None:
        current = [layer, tuple(probs.shape), causal, None, None]
        self._fold_rows(kind, layer, 0, probs, current)
        self._end_layer(kind, layer, current, q_mask, k_mask)


def _as_mask(mask: torch.Tensor | None, b: int, n: int, what: str, device: torch.device) -> torch.Tensor:
    if mask is None:
        return torch.ones(b, n, dtype=torch.bool, device=device)
    mask = torch.as_tensor(mask, device=device)
    if tuple(mask.shape) != (b, n):
        raise InputError(f"{what} must be [batch, {n}] = [{b}, {n}], got {tuple(mask.shape)}")
    return mask.bool()


class HeadReduce(_RowReducer):
    """Mean or max over heads of each layer: ``[L, Q, K]`` per example, or ``[Q, K]`` averaged over layers.

    ``layers`` (non-negative, as the total is unknown while streaming) keeps only those layers;
    ``layer_reduce="mean"`` keeps a running mean instead of one map per layer, so the state is one map.
    """

    def __init__(
        self,
        how: str = "mean",
        layers: Sequence[int] | None = None,
        layer_reduce: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> None:
        check_reduction(how)
        if layer_reduce not in (None, "mean"):
            raise InputError(f"layer_reduce must be None or 'mean', not {layer_reduce!r}")
        if layers is not None and any(int(i) < 0 for i in layers):
            raise InputError("streaming reducers take non-negative layer numbers (the layer count is not known yet)")
        self.how = how
        self.layers = sorted({int(i) for i in layers}) if layers is not None else None
        self.layer_reduce = layer_reduce
        self.name = f"head_{how}" + ("_layer_mean" if layer_reduce else "")
        super().__init__(kinds)

    needs_every_layer = False

    def wanted_layers(self) -> list[int] | None:
        """The layers kept (None: all)."""
        return self.layers

    def _fold_rows(self, kind: str, layer: int, row0: int, probs: torch.Tensor, current: list) -> None:
        if current[3] is None:
            b, _, q, k = current[1]
            current[3] = torch.zeros(b, q, k, dtype=torch.float64, device=probs.device)
        current[3][:, row0 : row0 + probs.shape[2]] = reduce_axis(probs, self.how)

    def _end_layer(self, kind: str, layer: int, current: list, q_mask: torch.Tensor, k_mask: torch.Tensor) -> None:
        reduced = current[3]  # [B, Q, K]
        if self.layer_reduce == "mean":
            total, count = self._state.get(kind, (None, 0))
            self._state[kind] = (reduced if total is None else total + reduced, count + 1)
        else:
            self._state.setdefault(kind, []).append(reduced)

    def _finish(self, kind: str, b: int, q_keep: torch.Tensor, k_keep: torch.Tensor) -> np.ndarray:
        state = self._state.get(kind)
        if state is None:
            raise InputError(f"reducer {self.name!r}: none of the layers {self.layers} was seen for {kind!r}")
        if self.layer_reduce == "mean":
            total, count = state
            m = (total[b] / count)[q_keep][:, k_keep]
        else:
            m = torch.stack([s[b] for s in state])[:, q_keep][:, :, k_keep]
        return m.cpu().numpy()


class RolloutReducer(_RowReducer):
    """Attention rollout accumulated layer by layer: R <- norm(0.5·Ā + 0.5·I) · R, ``[Q, K]`` per example.

    Equals the ``rollout`` method (heads combined by ``head_reduce``, ``residual`` share of identity) on
    a full record; defined on square kinds only (``self``, ``encoder``, ``decoder``).
    """

    name = "rollout"

    def __init__(self, residual: float = 0.5, head_reduce: str = "mean", kinds: Sequence[str] | None = None) -> None:
        if not 0.0 <= residual <= 1.0:
            raise InputError(f"residual must be within [0, 1], got {residual}")
        check_reduction(head_reduce)
        kinds = tuple(kinds) if kinds is not None else SQUARE_KINDS
        bad = [k for k in kinds if k not in SQUARE_KINDS]
        if bad:
            raise InputError(f"rollout multiplies square maps; it cannot stream {bad[0]!r} attention")
        self.residual = residual
        self.head_reduce = head_reduce
        super().__init__(kinds)

    def _fold_rows(self, kind: str, layer: int, row0: int, probs: torch.Tensor, current: list) -> None:
        b, _, q, k = current[1]
        if q != k:
            raise InputError(f"rollout needs as many queries as keys; {kind!r} is {(q, k)}")
        if current[3] is None:  # the head-combined map, filled block by block
            current[3] = torch.zeros(b, q, k, dtype=torch.float64, device=probs.device)
        current[3][:, row0 : row0 + probs.shape[2]] = reduce_axis(probs, self.head_reduce)

    def _fold_sink(self, kind: str, layer: int, row0: int, sink: torch.Tensor, current: list) -> None:
        b, _, q, _ = current[1]
        if current[4] is None:
            current[4] = torch.zeros(b, q, dtype=torch.float64, device=sink.device)
        current[4][:, row0 : row0 + sink.shape[2]] = reduce_axis(sink, self.head_reduce)

    def _end_layer(self, kind: str, layer: int, current: list, q_mask: torch.Tensor, k_mask: torch.Tensor) -> None:
        # float64 like the rollout method: long products of row-stochastic maps lose digits in float32.
        mixed = current[3].mul_(1.0 - self.residual)  # in place: the state is this map, R and the new R
        mixed.diagonal(dim1=-2, dim2=-1).add_(self.residual)
        total = mixed.sum(-1, keepdim=True)
        if current[4] is not None:  # a learned sink's share stays missing mass, as in the rollout method
            total.add_((1.0 - self.residual) * current[4][..., None])
        mixed.div_(total.clamp_min(torch.finfo(mixed.dtype).tiny))
        r = self._state.get(kind)
        self._state[kind] = mixed if r is None else torch.bmm(mixed, r)

    def _finish(self, kind: str, b: int, q_keep: torch.Tensor, k_keep: torch.Tensor) -> np.ndarray:
        return self._state[kind][b][q_keep][:, k_keep].cpu().numpy()


class HeadEntropy(_RowReducer):
    """Mean entropy of each head's rows, ``[L, H]`` per example, like :func:`attn_plugins.metrics.diagnostics.head_entropy`.

    ``normalized`` divides each row's entropy by the log of the number of keys it may see (1 = uniform)
    and leaves out rows that see a single key.
    """

    name = "head_entropy"

    def __init__(self, normalized: bool = True, kinds: Sequence[str] | None = None) -> None:
        self.normalized = normalized
        super().__init__(kinds)

    def _fold_rows(self, kind: str, layer: int, row0: int, probs: torch.Tensor, current: list) -> None:
        q_mask, k_mask = self._masks[kind]
        num, den = head_entropy_sums(
            probs,
            causal=current[2],
            normalized=self.normalized,
            key_mask=k_mask,
            query_mask=q_mask,
            row0=row0,
            n_queries=current[1][2],
        )
        current[3] = (num, den) if current[3] is None else (current[3][0] + num, current[3][1] + den)

    def _end_layer(self, kind: str, layer: int, current: list, q_mask: torch.Tensor, k_mask: torch.Tensor) -> None:
        num, den = current[3]
        if not bool((den > 0).all()):
            raise InputError("every attention row sees a single key: entropy is not informative")
        self._state.setdefault(kind, []).append(num / den)  # [B, H]

    def _finish(self, kind: str, b: int, q_keep: torch.Tensor, k_keep: torch.Tensor) -> np.ndarray:
        return torch.stack([s[b] for s in self._state[kind]]).cpu().numpy()


class TopK(_RowReducer):
    """The ``k`` largest weights of every row and their key positions (padding removed), per layer and head.

    Key positions count real tokens only, so they index the record's tokens even under left padding.
    Rows with fewer than ``k`` real keys keep as many as there are.
    """

    name = "top_k"

    def __init__(self, k: int = 5, kinds: Sequence[str] | None = None) -> None:
        if not isinstance(k, (int, np.integer)) or int(k) < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        self.k = int(k)
        self.name = f"top_{self.k}"
        super().__init__(kinds)

    def _fold_rows(self, kind: str, layer: int, row0: int, probs: torch.Tensor, current: list) -> None:
        _, k_mask = self._masks[kind]
        b, h, q, n_keys = current[1]
        k = min(self.k, n_keys)
        if current[3] is None:
            current[3] = (
                torch.empty(b, h, q, k, dtype=probs.dtype, device=probs.device),
                torch.empty(b, h, q, k, dtype=torch.long, device=probs.device),
            )
        # Padding keys sort below every real weight (weights are >= 0).
        scored = probs if bool(k_mask.all()) else probs.masked_fill(~k_mask[:, None, None, :], -1.0)
        values, idx = torch.topk(scored, k, dim=-1)
        position = torch.cumsum(k_mask.long(), dim=1) - 1  # padded position -> position among real keys
        real = torch.gather(position[:, None, None, :].expand(b, h, probs.shape[2], n_keys), -1, idx)
        rows = slice(row0, row0 + probs.shape[2])
        current[3][0][:, :, rows] = values
        current[3][1][:, :, rows] = real

    def _end_layer(self, kind: str, layer: int, current: list, q_mask: torch.Tensor, k_mask: torch.Tensor) -> None:
        self._state.setdefault(kind, []).append(current[3])

    def _finish(self, kind: str, b: int, q_keep: torch.Tensor, k_keep: torch.Tensor) -> TopKResult:
        k = min(self.k, int(k_keep.numel()))
        values = torch.stack([v[b] for v, _ in self._state[kind]])[:, :, q_keep, :k]
        indices = torch.stack([i[b] for _, i in self._state[kind]])[:, :, q_keep, :k]
        return TopKResult(values.cpu().numpy(), indices.cpu().numpy())


# ---------------------------------------------------------------------------- running a model with reducers
@dataclass
class StreamResult(Result):
    """One example of a streaming run: its tokens and ``{reducer name: {kind: result}}``."""

    tokens: list[str]
    results: dict[str, dict[str, Any]]
    target_tokens: list[str] | None = None
    word_ids: list[int | None] | None = None
    special_tokens_mask: list[bool] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per reducer and kind: the shape of what it kept."""
        out = []
        for name, per_kind in self.results.items():
            for kind, value in per_kind.items():
                shape = value.values.shape if isinstance(value, TopKResult) else np.shape(value)
                out.append({"reducer": name, "kind": kind, "shape": "x".join(map(str, shape))})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Tokens, metadata and every reducer's result as nested lists."""
        results = {
            name: {k: (vars(v) if isinstance(v, TopKResult) else v) for k, v in per_kind.items()}
            for name, per_kind in self.results.items()
        }
        return plain(
            {"tokens": self.tokens, "target_tokens": self.target_tokens, "meta": self.meta, "results": results}
        )


def stream(
    model: Any,
    tokenizer: Any = None,
    text: str | Sequence[str] | None = None,
    reducers: Reducer | Sequence[Reducer] = (),
    *,
    inputs: Mapping[str, Any] | None = None,
    target: str | Sequence[str] | None = None,
    truncation: bool = False,
    max_length: int | None = None,
    adapter: str | None = None,
    block_bytes: int | None = 32 << 20,
) -> list[StreamResult]:
    """Run ``model`` once with ``reducers`` fed each layer's attention as it is computed; one result per example.

    The adapter hands over one layer at a time (:meth:`attn_plugins.adapters.Adapter.listen`); the
    ``huggingface`` adapter hands over query blocks of at most ``block_bytes`` of float32 scores (None:
    whole layers) and computes only the layers and kinds some reducer reads.
    """
    reducers = [reducers] if isinstance(reducers, Reducer) else list(reducers)
    if not reducers:
        raise InputError("stream needs at least one reducer")
    names = [r.name for r in reducers]
    if len(set(names)) != len(names):
        raise InputError(f"reducer names must be unique, got {names}")
    if (text is None) == (inputs is None):
        raise InputError("pass either text (with a tokenizer) or inputs=, not both or neither")
    chosen = select_adapter(model, adapter)
    if text is not None:
        if tokenizer is None:
            tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise InputError("streaming from text needs a tokenizer; or pass inputs= with token ids")
        batch = encode(model, tokenizer, text, target=target, truncation=truncation, max_length=max_length)
    else:
        batch = encode_inputs(model, inputs, tokenizer=tokenizer)
    for r in reducers:
        r.reset()
    device = model_device(model)
    masks = {"source": batch.source_mask.to(device) if batch.source_mask.numel() else None, "target": None}
    if batch.target_mask is not None:
        masks["target"] = batch.target_mask.to(device)
    layers: dict[str, int] = {}
    wanted = [r.wanted_layers() for r in reducers]
    options = CaptureOptions(
        layers=sorted({i for w in wanted for i in w}) if all(w is not None for w in wanted) else None,
        kinds=sorted({k for r in reducers for k in r.kinds}) if all(r.kinds is not None for r in reducers) else None,
        block_bytes=block_bytes,
    )
    layout = chosen.attention_layout(model, batch.inputs)
    if layout is not None and options.kinds is not None:
        # Reducers may name kinds this model lacks (rollout: every square kind); if none is left, say which it has.
        options.kinds = [k for k in options.kinds if k in layout] or options.kinds
    if layout is not None:
        check_selection(layout, options)

    def heard(call: AttentionCall) -> None:
        layers[call.kind] = max(layers.get(call.kind, 0), call.num_layers or 0, call.layer + 1)
        query_side, key_side = sides(call.kind)
        if call.row0 == 0:
            shape = (call.probs.shape[0], call.probs.shape[1], call.rows, call.probs.shape[3])
            for r in reducers:
                r.begin_layer(
                    call.kind,
                    call.layer,
                    shape,
                    masks[key_side],
                    query_mask=masks[query_side],
                    causal=call.causal,
                    device=call.probs.device,
                )
        for r in reducers:
            r.update_rows(call.kind, call.layer, call.row0, call.probs, call.sink_mass)
        if call.ends_layer:
            for r in reducers:
                r.end_layer(call.kind, call.layer)

    with chosen.listen(model, options, heard), torch.no_grad():
        chosen.call(model, move_inputs(batch.inputs, device), move_inputs(batch.args, device))
    if not layers:
        raise UnsupportedModelError(f"adapter {chosen.name!r} heard no attention from {type(model).__name__}")
    per_reducer = {r.name: r.results() for r in reducers}
    model_type = chosen.describe(model).get("model_type")
    out = []
    for b in range(batch.size):
        src = batch.source[b]
        tgt = batch.target[b] if batch.target else None
        out.append(
            StreamResult(
                tokens=src.tokens,
                results={name: res[b] for name, res in per_reducer.items()},
                target_tokens=tgt.tokens if tgt else None,
                word_ids=src.word_ids,
                special_tokens_mask=src.special_tokens_mask,
                meta={"model_type": model_type, "layers": dict(layers)},
            )
        )
    return out
