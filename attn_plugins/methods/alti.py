"""ALTI (Ferrando et al. 2022): token-to-token contributions of each layer, measured after the layer norm.

A layer's attention block writes, for token i, ``y_i = LN(Σ_j T_i(x_j))`` with
``T_i(x_j) = Σ_h α^h_ij f^h(x_j) + δ_ij x_j`` (values through the output projection, plus the residual).
The layer norm is linear once its scale σ_i is fixed, so ``y_i = Σ_j T̃_i(x_j) + bias`` exactly, and the
contribution of j to i is ``max(0, ‖y_i‖₁ - ‖y_i - T̃_i(x_j)‖₁)``, rows normalized. Layers are combined by
multiplying the contribution matrices (the residual is already inside them). These need model weights,
so :func:`capture_alti` computes them with forward hooks and stores them in ``record.extras['alti']``.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..adapters import CaptureOptions, move_inputs
from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import AttentionRecord
from .base import Method, layers_of, to_numpy
from .rollout import rollout_product

EXTRAS_KEY = "alti"


@dataclass
class AltiLayer:
    """The modules of one encoder layer that ALTI reads."""

    value: torch.nn.Linear
    dense: torch.nn.Linear
    norm: torch.nn.LayerNorm
    heads: int


def alti_layers(model: Any) -> list[AltiLayer]:
    """Value projection, output projection and post-attention layer norm of every layer (BERT family)."""
    base = getattr(model, "base_model", model)
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    encoder = getattr(base, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer") and heads:
        # BERT, RoBERTa, ELECTRA, MiniLM: post-LN layers with attention.self.value / attention.output.*
        try:
            return [
                AltiLayer(lay.attention.self.value, lay.attention.output.dense, lay.attention.output.LayerNorm, heads)
                for lay in encoder.layer
            ]
        except AttributeError:
            pass
    transformer = getattr(base, "transformer", None)
    if transformer is not None and hasattr(transformer, "layer") and heads:
        try:  # DistilBERT
            return [
                AltiLayer(lay.attention.v_lin, lay.attention.out_lin, lay.sa_layer_norm, heads)
                for lay in transformer.layer
            ]
        except AttributeError:
            pass
    raise UnsupportedModelError(
        f"ALTI supports post-layer-norm BERT-family encoders (BERT, RoBERTa, ELECTRA, MiniLM, DistilBERT); "
        f"{type(model).__name__} has no such layers"
    )


def layer_contributions(
    attn: torch.Tensor,
    values: torch.Tensor,
    residual: torch.Tensor,
    pre_norm: torch.Tensor,
    layer: AltiLayer,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized contributions [T, T] of one layer, and the reconstructed layer-norm output y [T, D].

    ``attn`` [H, T, T] probabilities, ``values`` [T, D] value-projection outputs, ``residual`` [T, D] the
    layer input, ``pre_norm`` [T, D] the layer norm's input (its σ_i scales every term of token i).
    """
    t, d = values.shape
    h = layer.heads
    w = layer.dense.weight.detach().double().view(d, h, d // h)
    v = values.view(t, h, d // h)
    fx = torch.einsum("jhv,dhv->hjd", v, w)  # f^h(x_j): value through the head's slice of W_O
    terms = torch.einsum("hij,hjd->ijd", attn, fx)  # Σ_h α^h_ij f^h(x_j)
    terms = terms + torch.diag_embed(residual.T).permute(1, 2, 0)  # + δ_ij x_j
    gamma = layer.norm.weight.detach().double()
    beta = layer.norm.bias.detach().double()
    sigma = torch.sqrt(pre_norm.var(-1, unbiased=False) + layer.norm.eps)  # [T]

    def centered(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(-1, keepdim=True)) * gamma

    transformed = centered(terms) / sigma[:, None, None]  # T̃_i(x_j)
    bias = layer.dense.bias.detach().double() if layer.dense.bias is not None else torch.zeros(d, dtype=torch.float64)
    y = transformed.sum(1) + centered(bias)[None, :] / sigma[:, None] + beta
    closeness = y.abs().sum(-1, keepdim=True) - (y[:, None, :] - transformed).abs().sum(-1)
    contrib = closeness.clamp_min(0)
    sums = contrib.sum(-1, keepdim=True)
    return contrib / torch.where(sums > 0, sums, torch.ones_like(sums)), y


def alti_contributions(model: Any, inputs: dict[str, torch.Tensor], attentions: torch.Tensor) -> dict[str, Any]:
    """Per-layer contributions [L, T, T] for one example, plus the layer-norm reconstruction error.

    ``attentions`` [L, H, T, T] are the example's captured probabilities (all layers and heads).
    """
    layers = alti_layers(model)
    if attentions.shape[0] != len(layers):
        raise InputError(f"ALTI needs every layer's attention: got {attentions.shape[0]} of {len(layers)}")
    store: dict[tuple[int, str], torch.Tensor] = {}
    owner = threading.get_ident()

    def save(i: int, what: str, use_input: bool):
        def hook(module, args, output):
            if threading.get_ident() == owner:  # another thread's forward of the same model is not ours
                store[(i, what)] = (args[0] if use_input else output).detach().double()[0]

        return hook

    handles = []
    for i, lay in enumerate(layers):
        handles.append(lay.value.register_forward_hook(save(i, "value", False)))
        handles.append(lay.dense.register_forward_hook(save(i, "dense", False)))
        handles.append(lay.norm.register_forward_hook(save(i, "pre_norm", True)))
        handles.append(lay.norm.register_forward_hook(save(i, "norm", False)))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    contribs, worst = [], 0.0
    for i, lay in enumerate(layers):
        pre = store[(i, "pre_norm")]
        # In eval mode the layer norm's input is dense(attention output) + x, so x is the difference.
        residual = pre - store[(i, "dense")]
        c, y = layer_contributions(attentions[i].double(), store[(i, "value")], residual, pre, lay)
        worst = max(worst, float((y - store[(i, "norm")]).abs().max()))
        contribs.append(c)
    return {"contributions": torch.stack(contribs).float(), "reconstruction_error": worst}


def capture_alti(model: Any, tokenizer: Any, text: str, **capture_options: Any) -> AttentionRecord:
    """``ap.capture`` of one text plus ALTI contributions in ``record.extras['alti']`` [L, T, T]."""
    from ..capture import capture

    if not isinstance(text, str):
        raise InputError("capture_alti takes one text at a time")
    if capture_options.get("layers") is not None or capture_options.get("heads") is not None:
        raise InputError("ALTI combines every layer and head: capture without layers= or heads=")
    if getattr(model, "training", False):
        raise InputError("ALTI reads one deterministic forward: call model.eval() (dropout changes every term)")
    alti_layers(model)  # fail early, before the capture, on unsupported models
    record = capture(model, tokenizer, text, **capture_options)
    enc = tokenizer(text, return_tensors="pt", truncation=bool(capture_options.get("truncation", False)))
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if inputs["input_ids"].shape[1] != len(record.tokens):
        raise InputError("the tokenizer gives a different number of tokens than the capture; cannot align ALTI")
    key = record.default_kind
    out = alti_contributions(model, inputs, record.attentions[key])
    record.extras[EXTRAS_KEY] = out["contributions"]
    record.meta["alti_reconstruction_error"] = out["reconstruction_error"]
    return record


# ---------------------------------------------------------------------------- pre-LN decoders
# Decoders whose attention block writes y_i = x_i + W_O·(Σ_h α^h_ij v^h_j) + b_O into the residual stream: the
# norm comes before the value projection (pre-LN), so each value vector v_j is a function of x_j alone, and
# nothing normalizes the attention output before it is added. Parallel blocks (gptj, phi, falcon, gpt_neox)
# add their feed-forward beside it; it is token-wise and does not mix tokens. Post-LN (BERT family: above),
# sandwich norms (gemma2: a norm on the attention output) and models off the attention interface are not here.
PRE_LN_DECODERS = frozenset(
    {"gpt2", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "phi3", "gptj", "phi", "falcon", "gpt_neox",
     "gpt_oss", "opt"}
)  # fmt: skip
REFUSED = {
    "gemma2": "its attention output is normalized (post_attention_layernorm) before the residual add",
    "bloom": "it computes attention in its own modules, off transformers' attention interface",
}


def decoder_support(model: Any) -> str | None:
    """None when ALTI decomposes ``model`` as a pre-LN decoder, else the reason it does not."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in REFUSED:
        return REFUSED[model_type]
    if model_type not in PRE_LN_DECODERS:
        return (
            f"ALTI decomposes post-LN BERT-family encoders and the pre-LN decoders {', '.join(sorted(PRE_LN_DECODERS))}; "
            f"model type {model_type!r} is neither"
        )
    if model_type == "opt" and not getattr(config, "do_layer_norm_before", True):
        return "this OPT normalizes after attention (do_layer_norm_before=False): post-LN"
    return None


def _descendants(module: torch.nn.Module) -> set[int]:
    return {id(m) for m in module.modules() if m is not module}


@torch.no_grad()
def decoder_contributions(model: Any, adapter: Any, batch: Any) -> dict[str, Any]:
    """ALTI of one example on a pre-LN decoder: contributions [L, T, T], the terms and the reconstruction error.

    One forward through the listening capture function hands over each layer's probabilities and value vectors
    (as the model used them); the output projection is whichever submodule of the attention module runs first
    after the attention, applied to each token's share (it is affine: W·z + b, so b = proj(0)).
    """
    from .value_zeroing import blocks_by_module

    owner = threading.get_ident()
    block_of = blocks_by_module(model)
    events: list[tuple[str, Any, Any, Any]] = []  # in call order: ("attn", layer, module, (probs, value)), ...
    pending: dict[int, tuple[int, torch.Tensor]] = {}

    watch: dict[int, int] = {}  # submodule -> its attention module, while that one awaits its output projection
    awaiting: set[int] = set()

    def on_value(kind: str, layer: int, module: Any, value: torch.Tensor) -> torch.Tensor:
        if threading.get_ident() == owner:
            pending[id(module)] = (layer, value.detach())
            watch.update(dict.fromkeys(_descendants(module), id(module)))
            awaiting.add(id(module))
        return value

    def on_call(call: Any) -> None:
        if threading.get_ident() == owner:
            events.append(("attn", call.layer, None, call.probs.detach()))

    def on_module(module: torch.nn.Module, args: tuple, output: Any) -> None:
        # Only the first submodule an attention module runs after its attention: the output projection.
        if threading.get_ident() == owner and watch.get(id(module)) in awaiting and args:
            awaiting.discard(watch[id(module)])
            out = output[0] if isinstance(output, tuple) else output
            events.append(("module", id(module), args[0].detach(), out.detach()))

    def on_block(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if threading.get_ident() == owner:
            hidden = args[0] if args else kwargs.get("hidden_states")
            events.append(("block", id(module), hidden.detach() if isinstance(hidden, torch.Tensor) else None, None))

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = move_inputs(batch.inputs, device)
    if getattr(getattr(model, "config", None), "use_cache", None) is not None:
        inputs = {**inputs, "use_cache": False}
    blocks = {id(b): b for b in block_of.values()}
    inner = {id(m): m for m in model.modules() if id(m) in block_of and id(m) not in blocks}
    with ExitStack() as stack:
        for block in blocks.values():
            stack.callback(block.register_forward_pre_hook(on_block, with_kwargs=True).remove)
        for m in inner.values():
            stack.callback(m.register_forward_hook(on_module).remove)
        options = CaptureOptions(gradients=True, kinds=["self"], value_edit=on_value)  # probabilities as used
        stack.enter_context(adapter.listen(model, options, on_call))
        adapter.call(model, inputs, move_inputs(batch.args, device))
    return _decoder_terms(model, events, pending, block_of)


def _decoder_terms(model: Any, events: list, pending: dict, block_of: dict) -> dict[str, Any]:
    name = type(model).__name__
    attn_modules = {}  # layer -> attention module, from the value hook
    for mod_id, (layer, _) in pending.items():
        attn_modules[layer] = mod_id
    by_id = {id(m): m for m in model.modules()}
    contribs, worst, terms_out = [], 0.0, []
    block_input: dict[int, torch.Tensor] = {}
    layer = -1
    i = 0
    while i < len(events):
        what, key, a, b = events[i]
        if what == "block":
            block_input[key] = a
        if what != "attn":
            i += 1
            continue
        layer += 1
        probs = b[0].double()  # [H, T, T]
        module = by_id[attn_modules[layer]]
        value = pending[id(module)][1][0].double()  # [H_kv, T, dh]
        inside = _descendants(module)
        proj = next((e for e in events[i + 1 :] if e[0] == "module" and e[1] in inside), None)
        block = block_of.get(id(module))
        x = block_input.get(id(block)) if block is not None else None
        if proj is None or x is None:
            raise UnsupportedModelError(
                f"ALTI cannot find the output projection or the layer input of {name}'s layer {layer}"
            )
        out_mod, z_in, z_out = by_id[proj[1]], proj[2][0].double(), proj[3]
        x = x[0].double()
        h, t = probs.shape[0], probs.shape[-1]
        v = value.repeat_interleave(h // value.shape[0], dim=0)  # grouped-query heads share value vectors
        dh = v.shape[-1]
        shares = torch.einsum("hij,hjd->ijhd", probs, v).reshape(t, t, h * dh)  # z_ij: token j's part of z_i
        if z_in.shape != (t, h * dh) or (shares.sum(1) - z_in).abs().max() > 1e-4 * (1 + z_in.abs().max()):
            raise UnsupportedModelError(
                f"ALTI cannot split {name}'s layer {layer}: {type(out_mod).__name__} does not take the attention "
                "output as heads side by side"
            )
        proj64 = _affine64(out_mod)
        bias = proj64(torch.zeros(h * dh, dtype=torch.float64))
        terms = proj64(shares) - bias  # [T, T, D]: W_O z_ij
        terms = terms + torch.diag_embed(x.T).permute(1, 2, 0)  # + δ_ij x_j: the residual
        y = terms.sum(1) + bias
        out = z_out[0].double()
        worst = max(worst, float((y - (x + out)).abs().max()))
        closeness = y.abs().sum(-1, keepdim=True) - (y[:, None, :] - terms).abs().sum(-1)
        c = closeness.clamp_min(0)
        sums = c.sum(-1, keepdim=True)
        contribs.append(c / torch.where(sums > 0, sums, torch.ones_like(sums)))
        terms_out.append((terms, bias, x + out))
        i += 1
    if not contribs:
        raise UnsupportedModelError(f"ALTI saw no attention of {name} through the attention interface")
    return {"contributions": torch.stack(contribs).float(), "reconstruction_error": worst, "terms": terms_out}


def _affine64(module: torch.nn.Module):
    """The module's affine map in float64 (Linear, GPT-2's Conv1D), for exact terms."""
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 2:
        raise UnsupportedModelError(
            f"ALTI reads output projections with a 2-D weight; {type(module).__name__} has none"
        )
    w = weight.detach().double()
    b = getattr(module, "bias", None)
    b = b.detach().double() if b is not None else None
    conv1d = type(module).__name__ == "Conv1D"  # GPT-2 stores its weight [in, out]

    def apply(z: torch.Tensor) -> torch.Tensor:
        out = z @ w if conv1d else z @ w.T
        return out + b if b is not None else out

    return apply


def capture_alti_decoder(
    model: Any, tokenizer: Any, text: Any, inputs: Any, options: dict[str, Any]
) -> AttentionRecord:
    """``ap.capture`` of one example of a pre-LN decoder plus ALTI contributions in ``record.extras['alti']``."""
    from ..capture import capture
    from ..capture.forward import select_adapter
    from .value_zeroing import encode_like_capture

    record = capture(model, tokenizer, text, inputs=inputs, **options)
    if not isinstance(record, AttentionRecord):
        raise InputError("alti explains one example at a time")
    batch = encode_like_capture(model, tokenizer, text, inputs, options)
    out = decoder_contributions(model, select_adapter(model, options.get("adapter")), batch)
    if out["contributions"].shape[1:] != tuple(record.attentions["self"].shape[-2:]):
        raise InputError("the capture and the ALTI run see different numbers of tokens")
    record.extras[EXTRAS_KEY] = out["contributions"]
    record.meta["alti_reconstruction_error"] = out["reconstruction_error"]
    return record


class Alti(Method):
    """ALTI: per-layer contributions from ``record.extras['alti']``, multiplied from the first layer up.

    Contributions combine every head of a layer (they are token-to-token through the whole attention
    block), so ``heads`` and ``head_reduce`` cannot select or combine heads here.
    """

    name = "alti"
    requires = ("extras:alti",)
    kinds = ("self", "encoder")
    description = "ALTI (Ferrando et al. 2022) contributions with layer norm, rolled out over layers"
    forward_passes = 2  # the capture, then a hooked forward for the per-layer contributions
    batch_capture = False

    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """A BERT-family encoder or a pre-LN decoder ALTI decomposes exactly (found without a forward)."""
        self._decomposition(model)

    @staticmethod
    def _decomposition(model: Any) -> str:
        """``"encoder"`` (post-LN BERT family) or ``"decoder"`` (pre-LN); UnsupportedModelError naming why not."""
        try:
            alti_layers(model)
        except UnsupportedModelError:
            reason = decoder_support(model)
            if reason is not None:
                raise UnsupportedModelError(f"alti cannot decompose {type(model).__name__}: {reason}") from None
            return "decoder"
        return "encoder"

    def capture(
        self, model: Any, tokenizer: Any = None, text: Any = None, *, inputs: Any = None, **options: Any
    ) -> Any:
        """A record with ALTI contributions: a capture plus a second, hooked forward (:func:`capture_alti`)."""
        options.pop("gradient_target", None)
        if getattr(model, "training", False):
            raise InputError("ALTI reads one deterministic forward: call model.eval() (dropout changes every term)")
        if options.get("layers") is not None or options.get("heads") is not None:
            raise InputError("ALTI combines every layer and head: capture without layers= or heads=")
        if text is not None and not isinstance(text, str):
            raise InputError("alti explains one text at a time")
        if self._decomposition(model) == "decoder":
            if tokenizer is None:
                tokenizer = getattr(model, "tokenizer", None)
            return capture_alti_decoder(model, tokenizer, text, inputs, {**self.capture_options(), **options})
        if inputs is not None or not isinstance(text, str):
            raise InputError(
                "alti captures a BERT-family encoder from one plain text; it cannot explain pairs or batches"
            )
        return capture_alti(model, tokenizer, text, **{**self.capture_options(), **options})

    def contributions(self, record: AttentionRecord) -> torch.Tensor:
        """The stored [L, T, T] contributions, checked against the record's tokens."""
        c = record.extras.get(EXTRAS_KEY)
        if c is None:
            raise MissingCaptureError(
                "method 'alti' needs record.extras['alti'] (per-layer contributions from model weights); "
                "capture with attn_plugins.methods.alti.capture_alti(model, tokenizer, text)"
            )
        n = len(record.tokens)
        if not isinstance(c, torch.Tensor) or c.dim() != 3 or c.shape[1:] != (n, n):
            shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            raise InputError(f"record.extras['alti'] must be [layers, {n}, {n}], got {shape}")
        if not c.is_floating_point() or not torch.isfinite(c).all():
            raise InputError("record.extras['alti'] must hold finite floating-point contributions")
        return c.detach().double()

    def matrix(
        self,
        record: AttentionRecord,
        *,
        kind: str,
        layers: list[int],
        heads: list[int],
        head_reduce: str,
        rollout: bool = True,
    ) -> np.ndarray:
        """[T, T] ALTI rollout over the chosen layers (default all); ``rollout=False``: the last one alone."""
        if len(heads) != record.attentions[kind].shape[1] or head_reduce != "mean":
            raise InputError("alti combines every head of a layer itself; leave heads= and head_reduce= unset")
        c = self.contributions(record)
        # Contributions cover every layer of the model, indexed by original layer number (a selection made
        # after the capture keeps them whole), so the chosen layers are looked up by their numbers.
        ids = record.layer_ids(kind)
        wanted = sorted(ids[p] for p in layers)
        if wanted[-1] >= c.shape[0]:
            raise InputError(f"record.extras['alti'] has {c.shape[0]} layers; layer {wanted[-1]} was asked for")
        c = layers_of(c, wanted)
        return to_numpy(rollout_product(c) if rollout else c[-1])
