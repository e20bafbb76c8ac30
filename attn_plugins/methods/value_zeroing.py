"""Value zeroing (Mohebbi et al., EACL 2023): how much each token's output changes when one value vector is removed.

For layer l and token j, token j's value vector is set to zero in every head of layer l's attention
(after the value bias; queries, keys and so the attention weights are untouched), the layer (the whole
block: attention, norms, feed-forward) runs on its original input, and the score of j for token i is the
cosine distance ``1 - cos(h̃_i, h_i)`` between i's block output with and without j's value, the diagonal
included. Rows are normalized to sum to 1; layers are combined by rolling out without adding the identity
(the paper's ``compute_joint_attention(res=False)``): R = M_L ··· M_1.

No per-architecture code: the zeroing happens inside the attention computation, through the adapter's
listening capture function (:attr:`~attn_plugins.adapters.CaptureOptions.value_edit`), so every model on
transformers' attention interface is covered (encoders, decoders, encoder-decoders: ``encoder``,
``decoder`` and ``cross`` attention each zero their own keys). A layer's output is the output of the
outermost ``ModuleList`` item holding its attention module (the transformer block), found by module path;
each block's output is replaced by the unzeroed one before the next block runs, so every layer sees its
original input (as the authors re-run one layer, and as inseq patches block outputs).

Batching: batch row r zeroes token r's value in every layer of one attention kind, the last row zeroes
nothing (the comparison point, computed the same way), so a kind with K keys costs one forward of K + 1
rows (in chunks of at most ``chunk`` zeroed rows). Scores are distances: never negative, they say how much
a token is mixed in, not in which direction.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch

from ..adapters import CaptureOptions, EncodedBatch, move_inputs
from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import AttentionRecord
from .base import Method, layers_of, to_numpy
from .rollout import rollout_product

EXTRAS_KEY = "value_zeroing"
CHUNK = 64  # zeroed rows per forward: bounds memory at (CHUNK + 1) x one forward's activations


def extras_key(record: AttentionRecord, kind: str) -> str:
    """Where a record keeps one kind's value-zeroing matrices (the default kind under the plain name)."""
    return EXTRAS_KEY if kind == record.default_kind else f"{EXTRAS_KEY}:{kind}"


def blocks_by_module(model: torch.nn.Module) -> dict[int, torch.nn.Module]:
    """``id(module) -> block`` for every module inside an item of a ``ModuleList`` (the outermost such item)."""
    lists = {name for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)}
    by_name = dict(model.named_modules())
    out: dict[int, torch.nn.Module] = {}
    for name, module in by_name.items():
        parts = name.split(".") if name else []
        for k in range(1, len(parts)):
            if ".".join(parts[:k]) in lists:
                out[id(module)] = by_name[".".join(parts[: k + 1])]
                break
    return out


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _expand(x: Any, rows: int) -> Any:
    """Inputs of one example repeated ``rows`` times along the batch axis."""
    if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == 1:
        return x.expand(rows, *x.shape[1:])
    if isinstance(x, dict):
        return {k: _expand(v, rows) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_expand(v, rows) for v in x)
    return x


@torch.no_grad()
def zeroing_matrices(
    model: Any, adapter: Any, batch: EncodedBatch, kind: str, keys: int, chunk: int = CHUNK
) -> torch.Tensor:
    """Row-normalized value-zeroing matrices [L, Q, K] of one attention ``kind`` with ``keys`` keys, one example."""
    if chunk < 1:
        raise InputError(f"chunk must be a positive number of rows, not {chunk}")
    block_of = blocks_by_module(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = move_inputs(batch.inputs, device)
    args = move_inputs(batch.args, device)
    if getattr(getattr(model, "config", None), "use_cache", None) is not None:
        inputs = {**inputs, "use_cache": False}  # every row recomputes its keys and values
    dists = [
        _zeroed_distances(model, adapter, inputs, args, kind, keys, torch.arange(s, min(s + chunk, keys)), block_of)
        for s in range(0, keys, chunk)
    ]
    m = torch.cat(dists, dim=-1).clamp_min(0)  # [L, Q, K]
    return m / m.sum(-1, keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)


def _zeroed_distances(
    model: Any,
    adapter: Any,
    inputs: dict[str, Any],
    args: tuple,
    kind: str,
    keys: int,
    zeroed: torch.Tensor,
    block_of: dict[int, torch.nn.Module],
) -> torch.Tensor:
    """Cosine distances [L, Q, len(zeroed)] of each block's outputs with each ``zeroed`` token's value removed."""
    owner = threading.get_ident()
    rows = len(zeroed) + 1
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    keep = torch.ones(rows, 1, keys, 1, device=device)
    keep[torch.arange(len(zeroed)), 0, zeroed] = 0  # row r zeroes token zeroed[r]; the last row, nothing
    layer_of: dict[int, int] = {}
    outputs: dict[int, torch.Tensor] = {}

    def edit(call_kind: str, layer: int, module: Any, value: torch.Tensor) -> torch.Tensor:
        if call_kind != kind or threading.get_ident() != owner:
            return value
        block = block_of.get(id(module))
        if block is None or value.dim() != 4 or value.shape[0] != rows or value.shape[2] != keys:
            raise UnsupportedModelError(
                f"value zeroing cannot place {type(model).__name__}'s {kind} attention module "
                f"{type(module).__name__} in a layer block (a ModuleList item) with values [{rows}, heads, "
                f"{keys}, head_dim]; got {tuple(value.shape)}"
            )
        layer_of[id(block)] = layer
        return value * keep.to(value.dtype)

    def patch(module: torch.nn.Module, args_: tuple, output: Any) -> Any:
        if threading.get_ident() != owner:  # another thread's forward of the same model: not ours to touch
            return None
        layer = layer_of.pop(id(module), None)
        if layer is None:
            return None
        hidden = _hidden(output)
        outputs[layer] = hidden.detach()
        # The next block sees the unzeroed output in every row: each layer is zeroed on its original input.
        clean = hidden[-1:].expand_as(hidden).contiguous()
        return (clean, *output[1:]) if isinstance(output, tuple) else clean

    options = CaptureOptions(kinds=[], value_edit=edit)  # no weights handed over: only the values edited
    with ExitStack() as stack:
        for block in {id(b): b for b in block_of.values()}.values():
            stack.callback(block.register_forward_hook(patch).remove)
        stack.enter_context(adapter.listen(model, options, lambda call: None))
        adapter.call(model, _expand(inputs, rows), _expand(args, rows))
    if not outputs:
        raise UnsupportedModelError(
            f"value zeroing edits value vectors inside transformers' attention interface; "
            f"{type(model).__name__} computes its {kind} attention in its own modules (off the interface)"
        )
    if sorted(outputs) != list(range(len(outputs))):
        raise UnsupportedModelError(f"value zeroing saw {kind} layers {sorted(outputs)} of {type(model).__name__}")
    out = torch.stack([outputs[i] for i in range(len(outputs))]).double()  # [L, rows, Q, D]
    cos = torch.nn.functional.cosine_similarity(out[:, :-1], out[:, -1:], dim=-1)  # [L, zeroed, Q]
    return (1 - cos).transpose(1, 2)


def encode_like_capture(model: Any, tokenizer: Any, text: Any, inputs: Any, options: dict[str, Any]) -> EncodedBatch:
    """The encoded example :func:`attn_plugins.capture` runs for these arguments."""
    from ..capture.encoding import encode, encode_inputs, encode_raw, is_raw_inputs

    if text is not None:
        return encode(
            model,
            tokenizer,
            text,
            target=options.get("target"),
            truncation=options.get("truncation", False),
            max_length=options.get("max_length"),
        )
    return encode_raw(inputs) if is_raw_inputs(inputs) else encode_inputs(model, inputs, tokenizer=tokenizer)


class ValueZeroing(Method):
    """Value zeroing: per-layer context-mixing scores from zeroed value vectors, rolled out without the identity."""

    name = "value_zeroing"
    requires = (f"extras:{EXTRAS_KEY}",)
    kinds = ("self", "encoder", "decoder", "cross")
    description = "Value zeroing (Mohebbi et al. 2023): cosine distance of outputs with one value vector zeroed"
    forward_passes = 1  # the capture; the zeroings add K + 1 rows per kind (record.meta["forward_passes"])
    batch_capture = False  # one text: its zeroed forwards are batched over its own tokens

    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """The model's attention runs through the capture function, where a value vector is zeroed (no forward)."""
        from ..capture.forward import select_adapter

        if not isinstance(model, torch.nn.Module) or not select_adapter(model, None).attention_rules(model):
            raise UnsupportedModelError(
                f"value zeroing edits value vectors inside transformers' attention interface; "
                f"{type(model).__name__} computes its attention in its own modules (off the interface)"
            )

    def capture(
        self, model: Any, tokenizer: Any = None, text: Any = None, *, inputs: Any = None, **options: Any
    ) -> AttentionRecord:
        """``ap.capture`` of one example plus each kind's value-zeroing matrices in ``record.extras``."""
        from ..capture import capture
        from ..capture.forward import select_adapter

        options.pop("gradient_target", None)
        if options.get("layers") is not None or options.get("heads") is not None:
            raise InputError("value zeroing zeroes every layer: capture without layers= or heads=")
        if getattr(model, "training", False):
            raise InputError("value zeroing compares outputs with and without a value: call model.eval() (dropout)")
        if text is not None and not isinstance(text, str):
            raise InputError("value zeroing explains one text at a time")
        if tokenizer is None:
            tokenizer = getattr(model, "tokenizer", None)
        record = capture(model, tokenizer, text, inputs=inputs, **options)
        if not isinstance(record, AttentionRecord):
            raise InputError("value zeroing explains one example at a time")
        batch = encode_like_capture(model, tokenizer, text, inputs, options)
        adapter = select_adapter(model, options.get("adapter"))
        passes = 1
        for kind, weights in record.attentions.items():
            keys = int(weights.shape[-1])
            mats = zeroing_matrices(model, adapter, batch, kind, keys)
            if mats.shape[1:] != tuple(weights.shape[-2:]) or mats.shape[0] != weights.shape[0]:
                raise InputError(
                    f"the capture ({tuple(weights.shape)}) and the value-zeroing run ({tuple(mats.shape)}) "
                    f"see different {kind} layers or tokens"
                )
            record.extras[extras_key(record, kind)] = mats.float()
            passes += keys + 1
        record.meta["forward_passes"] = passes  # forward-equivalents: the capture, then K + 1 rows per kind
        return record

    def matrix(
        self, record: AttentionRecord, *, kind: str, layers: list[int], heads: list[int], head_reduce: str
    ) -> np.ndarray:
        """[Q, K] rollout (no identity added) of the chosen layers; cross attention: the last chosen layer."""
        if len(heads) != record.attentions[kind].shape[1] or head_reduce != "mean":
            raise InputError("value zeroing zeroes a value vector in every head; leave heads= and head_reduce= unset")
        key = extras_key(record, kind)
        c = record.extras.get(key)
        if c is None:
            raise MissingCaptureError(
                f"method 'value_zeroing' needs record.extras[{key!r}]; capture with "
                "get_method('value_zeroing').capture(model, tokenizer, text)"
            )
        q, k = record.attentions[kind].shape[-2:]
        if c.dim() != 3 or tuple(c.shape[1:]) != (q, k):
            raise InputError(f"record.extras[{key!r}] must be [layers, {q}, {k}], got {tuple(c.shape)}")
        ids = record.layer_ids(kind)
        wanted = sorted(ids[p] for p in layers)
        if wanted[-1] >= c.shape[0]:
            raise InputError(f"record.extras[{key!r}] has {c.shape[0]} layers; layer {wanted[-1]} was asked for")
        c = layers_of(c.detach().double(), wanted)
        # Cross-attention rows (target tokens) and columns (source tokens) differ: no product over layers.
        return to_numpy(c[-1] if kind == "cross" else rollout_product(c))
