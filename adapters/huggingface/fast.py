"""Fast capture: calls chosen before the forward, each captured call computed once into its records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from attn_adapters.huggingface.layout import _INFO_LOCK, ModelInfo
from attn_adapters.huggingface.recording import CaptureContext, _own_output
from attn_adapters.kernel import POOL, Dest, Scratch, attend
from attn_plugins.adapters import CaptureOptions, EncodedBatch
from attn_plugins.errors import UnsupportedModelError
from attn_plugins.record import choose


def _run_of(mask: torch.Tensor | None, b: int, n: int) -> tuple[int, int] | None | bool:
    """Real positions of example ``b`` as one ``(start, length)`` run; None: all of them; False: not one run."""
    if mask is None or mask.numel() == 0 or mask.shape[-1] != n:
        return None
    idx = torch.nonzero(mask[b].bool(), as_tuple=False).flatten()
    m = idx.numel()
    if m == n:
        return None
    if m == 0 or int(idx[-1]) - int(idx[0]) != m - 1:
        return False
    return (int(idx[0]), m)


def contiguous_tokens(batch: EncodedBatch) -> bool:
    """Whether every example's real tokens are one run (left or right padding), so records are cut as blocks."""
    for mask in (batch.source_mask, batch.target_mask):
        if mask is None or mask.numel() == 0:
            continue
        for b in range(mask.shape[0]):
            if _run_of(mask, b, mask.shape[-1]) is False:
                return False
    return True


class FastCapture(CaptureContext):
    """A capture decided per call before the forward; each captured call is computed once, into its records.

    The plan (from the model's :class:`Layout` and the selection) names the calls to capture. Each one
    runs :func:`attn_adapters.kernel.attend`: probabilities written into the records' preallocated
    ``[L_sel, H_sel, Q_b, K_b]`` tensors (one per example and kind, in the record dtype, padding never
    stored) and the output computed from them (``keep_backend``: the backend's). Other calls run the
    backend untouched. A call the layout does not know marks the capture stale (the caller learns again).
    """

    def __init__(self, model: torch.nn.Module, options: CaptureOptions, batch: EncodedBatch, info: ModelInfo) -> None:
        super().__init__(model, options)
        self.info = info
        self.batch = batch
        self.layout = info.layout
        self.scratch = Scratch()
        self.mask_cache: dict = {}
        self.plan: dict[tuple[int, int], tuple[str, int]] = {}
        self.layer_ids: dict[str, list[int]] = {}
        self.head_index: dict[str, torch.Tensor | None] = {}
        self.buffers: dict[str, list[torch.Tensor]] = {}
        self.sink_buffers: dict[str, list[torch.Tensor]] = {}
        self.geometry: dict[str, tuple[tuple[int, ...], list[tuple]]] = {}
        self.written: dict[str, int] = {}
        self.causal: dict[str, bool] = {}
        self.stale = False

    def prepare(self) -> None:
        """Resolve layers, heads and kinds into a plan of calls (cached per selection)."""
        self.plan, self.layer_ids, self.head_index = plan_for(self.info, self.options)

    def attention(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        *,
        _backend: Callable[..., Any] | None = None,
        _original: str | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Capture this call if it is planned (one computation), else hand it to the backend untouched."""
        self.calls += 1
        mid = id(module)
        index = self._counts.get(mid, 0)
        self._counts[mid] = index + 1
        site = self.sites.get(mid)
        slot = self.plan.get((mid, index))
        if slot is None or site is None or site.ref() is not module:
            if slot is not None or (mid, index) not in self.layout.slots:
                self.stale = True  # a call the layout does not know: the caller learns the layout again
            return _backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        kind, layer = slot
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        softcap, sinks = kwargs.get("softcap"), kwargs.get("s_aux")
        own = _own_output(self.options, _backend, _original, softcap, sinks)
        b, h, q_len = query.shape[:3]
        k_len = key.shape[2]
        causal = bool(getattr(module, "is_causal", is_causal)) and not site.cross
        dests = self._dests(kind, layer, (b, h, q_len, k_len), sinks is not None, query.device)
        self.written[kind] = self.written.get(kind, 0) + 1
        self.causal[kind] = self.causal.get(kind, False) or causal
        output = attend(
            query,
            key,
            value if own else None,
            attention_mask,
            scaling=scaling,
            softcap=softcap,
            position_bias=kwargs.get("position_bias"),
            sinks=sinks,
            causal_if_unmasked=site.backend != "eager" and bool(is_causal),
            causal=causal,
            dests=dests,
            scratch=self.scratch,
            dropout=float(dropout or 0.0),
            training=module.training,
            mask_cache=self.mask_cache,
        )
        if not own:
            output, _ = _backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        return output, None

    def _dests(self, kind: str, layer: int, shape: tuple[int, ...], sinks: bool, device: torch.device) -> list[Dest]:
        """Each example's slice of layer ``layer`` in its record tensor (allocated at the kind's first call)."""
        geometry = self.geometry.get(kind)
        if geometry is None:
            geometry = self._allocate(kind, shape, device)
        elif geometry[0] != shape:
            raise UnsupportedModelError(
                f"attention modules of one kind have different shapes {[geometry[0], shape]}; "
                "this model needs its own adapter (see docs/plugins.md)"
            )
        if sinks and kind not in self.sink_buffers:
            # float32 whatever the record dtype: [L, H, Q] is small, and half-precision sink mass would add
            # its own rounding to the rows + sink = 1 check.
            self.sink_buffers[kind] = [
                torch.zeros(buf.shape[:3], dtype=torch.float32, device=device) for buf in self.buffers[kind]
            ]
        sink_bufs = self.sink_buffers.get(kind)
        heads = self.head_index[kind]
        return [
            Dest(
                self.buffers[kind][i][layer],
                sink_bufs[i][layer] if sink_bufs is not None else None,
                heads,
                rows,
                cols,
            )
            for i, (rows, cols) in enumerate(geometry[1])
        ]

    def _allocate(self, kind: str, shape: tuple[int, ...], device: torch.device) -> tuple:
        b, h, q_len, k_len = shape
        masks = {"source": self.batch.source_mask, "target": self.batch.target_mask}
        q_side, k_side = (
            ("target", "source") if kind == "cross" else (("target",) * 2 if kind == "decoder" else ("source",) * 2)
        )
        n_layers = len(self.layer_ids[kind])
        heads = self.head_index[kind]
        n_heads = h if heads is None else heads.numel()
        runs, buffers = [], []
        for i in range(b):
            rows, cols = _run_of(masks[q_side], i, q_len), _run_of(masks[k_side], i, k_len)
            if rows is False or cols is False:  # checked before the forward (contiguous_tokens)
                raise UnsupportedModelError("real tokens are not one contiguous run")
            qn = rows[1] if rows else q_len
            kn = cols[1] if cols else k_len
            # From the pool: a fresh 75 MB tensor costs ~50 ms of page faults here, about as much as its attention.
            buffers.append(POOL.empty((n_layers, n_heads, qn, kn), self.options.dtype, device))
            runs.append((rows, cols))
        self.buffers[kind] = buffers
        self.geometry[kind] = (shape, runs)
        return self.geometry[kind]

    def complete(self) -> bool:
        """Whether every planned layer was written exactly once (else the layout was stale)."""
        if self.stale or not self.written:
            return False
        return all(self.written.get(kind, 0) == len(ids) for kind, ids in self.layer_ids.items())


def plan_for(info: ModelInfo, options: CaptureOptions) -> tuple[dict, dict[str, list[int]], dict]:
    """The calls to capture for a selection: ``{(module id, call index): (kind, position)}``, layers, heads."""
    sel = (
        tuple(options.layers) if options.layers is not None else None,
        tuple(options.heads) if options.heads is not None else None,
        tuple(options.kinds) if options.kinds is not None else None,
    )
    with _INFO_LOCK:
        cached = info.plans.get(sel)
    if cached is not None:
        return cached
    layout = info.layout
    plan, layer_ids, head_index = {}, {}, {}
    for kind, (n_layers, n_heads) in layout.totals.items():
        if options.kinds is not None and kind not in options.kinds:
            continue
        layers = choose(options.layers, n_layers, f"{kind} layer")
        layer_ids[kind] = layers
        heads = choose(options.heads, n_heads, "head") if options.heads is not None else None
        head_index[kind] = torch.tensor(heads) if heads is not None else None
        pos = {layer: i for i, layer in enumerate(layers)}
        for slot, (k, layer) in layout.slots.items():
            if k == kind and layer in pos:
                plan[slot] = (kind, pos[layer])
    cached = (plan, layer_ids, head_index)
    with _INFO_LOCK:
        info.plans[sel] = cached
    return cached


def fast_eligible(model: torch.nn.Module, options: CaptureOptions, batch: EncodedBatch) -> bool:
    """Plain weight captures of a model in eval mode take the one-computation path; the rest need autograd."""
    return not (
        options.values
        or options.value_norms
        or options.qk
        or options.gradients
        or options.attention_rule
        or model.training
    ) and contiguous_tokens(batch)
