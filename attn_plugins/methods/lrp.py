"""LRP through attention on real transformers models: AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al. 2022).

Relevance is read as input × modified gradient (lxt's "efficient" formulation): for a tensor z of the
forward pass, R(z) = z ⊙ g(z), where g is the gradient of the explained output under a backward pass
changed by these rules (the forward pass is never changed):

==========================  ===============================================  ==========================================
operation                   rule                                             where it is applied
==========================  ===============================================  ==========================================
linear y = W x + b          ε-rule, ε → 0: the plain gradient; the bias      nothing to change
                            keeps b ⊙ g(y) (a sink)
LayerNorm                   identity rule on 1/σ: σ detached; the centering  a forward hook on every ``nn.LayerNorm``
                            is linear; β keeps β ⊙ g(y) (a sink)
GELU, tanh (pooler)         identity rule: g(x) = g(y)·f(x)/(x + 1e-10),     a forward hook on the activation module
                            so x ⊙ g(x) = y ⊙ g(y)
Q·Kᵀ and A·V                AttnLRP: uniform rule, each operand gets half    the capture function
                            (``attention_rule="uniform"``); CP-LRP:          (``CaptureOptions.attention_rule``),
                            probabilities detached (``"detached"``)          applied inside the attention
softmax                     AttnLRP Prop. 3.1, R(s_j) = s_j (R(A_j) − A_j    the plain gradient is exactly this rule
                            Σ_k R(A_k)); it is not conservative: the
                            difference Σ R(A) − Σ R(s) leaks
dropout                     identity                                         eval mode
==========================  ===============================================  ==========================================

So the relevance that reaches the input tokens is the explained output minus what the sinks keep:
every bias (b ⊙ g(b), LayerNorm β included) and, for AttnLRP, the softmax leak of each layer (CP-LRP has
none). :func:`budget` computes every term; they add up to the output (tests: to 1e-10 in float64).

The explained output is the ``gradient_target`` of the capture in the form that is linear in the last
hidden states where the model allows it: a class logit as it is, a cosine similarity with the norm of
the pooled embedding held constant (``target.relevance``; the full cosine is scale-invariant, so input ×
gradient of it sums to zero).

Two readouts of the input relevance:

* at the embeddings (``baseline=None``): token i's relevance is Σ_d (word + position + token type)_i,d ⊙
  g_i,d at the input of the embedding LayerNorm (``part="word"`` alone is lxt's ``inputs_embeds``
  convention; ``part="emb_out"`` reads it after the LayerNorm, with its β share);
* against the masked text (``baseline="mask"``): every non-special token replaced by the mask token gives
  m; one forward at the midpoint z = E(m) + ½ (E(x) − E(m)) of the embedding outputs E and one modified
  backward give R_i = Σ_d (E(x) − E(m))_i,d ⊙ g(z)_i,d, a one-point path integral of the relevance of
  the change m → x. Shapley values with a mask-token masker distribute f(x) − f(m), the same change.

Both cost one forward and one backward pass (3 forward-equivalents). A list of texts is explained in one
right-padded forward and one backward of the sum of the texts' targets (``BatchTarget``, each text's
target read on its own row): texts in a batch do not interact, so each gets the relevance it gets alone
(tests/explain/test_batched_relevance.py); a table read once for the batch (BERT's positions) gets a leaf
per row, so its gradient is not summed over the texts. The rules are implemented for the
BERT family (BERT, RoBERTa, XLM-RoBERTa, ELECTRA encoders and their sequence/token classification
heads); any other module is refused by name (:func:`check_model`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..adapters import ATTENTION_RULES, BatchTarget, CaptureOptions, split_batch, target_scalar
from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import AttentionRecord
from .base import TargetMethod
from .rules import IDENTITY_EPS, Sinks, check_model, layer_norm_rule, module_rule, module_rules  # noqa: F401

# LRP name -> the attention rule of the capture function (attn_plugins.adapters.ATTENTION_RULES).
RULES = {"attnlrp": "uniform", "cplrp": "detached"}
PARTS = ("embedding", "word", "position", "token_type", "emb_out", "patches", "cls")
BASELINES = (None, "mask")

# The rule table (module kinds, per-architecture rows, the hooks applying them) lives in .rules.
__all__ = ["LRP", "budget", "check_model", "lrp", "masked_baseline", "module_rule", "module_rules", "softmax_leak"]


def embedding_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The embedding block and its word, position and token-type tables (those the model has)."""
    base = getattr(model, "base_model", model)
    emb = getattr(base, "embeddings", None)
    if emb is None or not hasattr(emb, "word_embeddings"):
        raise UnsupportedModelError(f"{type(model).__name__} has no embeddings.word_embeddings block to read from")
    out = {"block": emb, "word": emb.word_embeddings}
    for part, attr in (("position", "position_embeddings"), ("token_type", "token_type_embeddings")):
        if isinstance(getattr(emb, attr, None), torch.nn.Embedding):
            out[part] = getattr(emb, attr)
    return out


def relevance_target(gradient_target: Any) -> Callable[[Any], torch.Tensor]:
    """The explained scalar in its conservative form: ``target.relevance`` when the target offers one."""
    linear = getattr(gradient_target, "relevance", None)
    if callable(linear):
        return linear
    return lambda output: target_scalar(output, gradient_target)


@dataclass
class Relevance:
    """The relevances of one forward and modified backward, per token (batch of one)."""

    value: float  # the explained output at the point the backward started from (a batch: the sum)
    # part name -> [T] (source side; a batch: [B, T] with padding); "decoder.<part>" for a decoder's inputs
    parts: dict[str, torch.Tensor]
    # kind -> [L, H, Q, K] of that forward (at the midpoint with a baseline); a batch: [B, L, H, Q, K]
    attentions: dict[str, torch.Tensor]
    biases: dict[str, float] = field(default_factory=dict)  # parameter (or constant) name -> b · g(b)
    softmax_leak: list[float] = field(default_factory=list)  # per attention call: Σ R(A) − Σ R(s)
    router_leak: dict[str, float] = field(default_factory=dict)  # router -> Σ R(weights) − R(its input, bias)
    values: list[float] = field(default_factory=list)  # each example's explained output (a batch target's rows)


def softmax_leak(probs: torch.Tensor, grad: torch.Tensor, sink: torch.Tensor | None = None) -> float:
    """Σ R(A) − Σ R(s) of one layer's softmax, from its probabilities A and their modified gradient g(A).

    With the plain softmax backward g(s) = A ⊙ (g(A) − ⟨A, g(A)⟩) and s = log A + a per-row constant
    (which g(s) sums to zero against), Σ s ⊙ g(s) needs no access to the scores themselves. With a learned
    sink (``sink``: its share of each row, [.., Q]) the sink's column takes part in the row (its g is 0);
    its R(s) goes to the sink parameter, counted there.
    """
    a = probs.detach().double()
    g = grad.detach().double()
    if sink is not None:
        a = torch.cat([a, sink.detach().double()[..., None]], dim=-1)
        g = torch.cat([g, torch.zeros_like(g[..., :1])], dim=-1)
    g_s = a * (g - (a * g).sum(-1, keepdim=True))
    log_a = torch.where(a > 0, a.clamp_min(1e-300).log(), torch.zeros_like(a))
    return float((a * g).sum() - (log_a * g_s).sum())


# Parameters added to what they feed (their relevance b ⊙ g(b) is a sink): biases (LayerNorm β too), learned
# attention sinks (gpt-oss), DeBERTa's relative position embeddings.
_ADDITIVE = ("bias", ".sinks", "rel_embeddings.weight")
_SIDES = ("source", "decoder")


class _StopError(Exception):
    """Ends a forward once the first residual stream is seen (the baseline's embedding)."""


def _additive(name: str) -> bool:
    return name.endswith(_ADDITIVE) or name.endswith("_bias")


def first_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The first transformer layer of each side (``source``; ``decoder`` for encoder-decoders): its input is
    the first residual stream."""
    encoder = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else None
    names = {id(m): n for n, m in model.named_modules()}
    enc_prefix = names.get(id(encoder)) if encoder is not None else None
    out: dict[str, torch.nn.Module] = {}
    for name, module in model.named_modules():
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
        if not name.endswith("0") or not isinstance(parent, torch.nn.ModuleList) or name.rsplit(".", 1)[1] != "0":
            continue
        if not any("attention" in type(m).__name__.lower() for m in module.modules()):
            continue
        side = "source"
        if enc_prefix is not None and not name.startswith(enc_prefix + "."):
            side = "decoder"
        out.setdefault(side, module)
    if "source" not in out:
        raise UnsupportedModelError(f"LRP cannot find the first transformer layer of {type(model).__name__}")
    return out


def _stream_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_stream(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": x}


def _baseline_stream(model: torch.nn.Module, layer: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The first residual stream of ``inputs`` (one forward, stopped at the first layer)."""
    seen: list[torch.Tensor] = []

    def stop(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append(_stream_input(args, kwargs).detach())
        raise _StopError

    handle = layer.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    except _StopError:
        pass
    finally:
        handle.remove()
    return seen[0]


def lrp(
    model: Any,
    inputs: dict[str, torch.Tensor],
    target: Any,
    rule: str = "uniform",
    *,
    adapter: Any = None,
    baseline_ids: torch.Tensor | None = None,
    alpha: float = 0.5,
    budget: bool = False,
) -> Relevance | list[Relevance]:
    """One forward and one modified backward of ``model`` on ``inputs``, explaining ``target``.

    ``inputs`` hold one example, or a right-padded batch of texts explained by one backward of a
    :class:`~attn_plugins.adapters.BatchTarget` (the sum of each text's target: texts in a batch do not
    interact, so each gets the relevance it gets alone); the parts are then ``[B, T]``, padding included.

    ``target`` given as a list (e.g. one per generated token) explains each from the one forward: one
    modified backward per target over the same graph, one :class:`Relevance` each, in order.

    ``rule`` is an attention rule (``"uniform"``: AttnLRP, ``"detached"``: CP-LRP). Relevance is read at the
    input embeddings: every embedding table's output (word, position, token type), ViT's patches, class token
    and position table, the first residual stream (``emb_out``; Whisper's source: its conv stem's output).
    ``baseline_ids`` (the input ids with tokens replaced; for images and audio, the pixels or frames of the
    baseline, e.g. zeros) switches to the midpoint readout on the first residual stream against that
    baseline (part ``"delta"``). ``budget`` also returns every sink.
    """
    from ..capture.forward import select_adapter

    if rule not in ATTENTION_RULES:
        raise InputError(f"attention rule must be one of {', '.join(ATTENTION_RULES)}, not {rule!r}")
    if torch.is_inference_mode_enabled():
        raise InputError("LRP needs gradients, and torch.inference_mode() forbids them: call it outside inference_mode")
    adapter = adapter or select_adapter(model)
    check_model(model, rule, adapter)
    main = next((k for k in ("input_ids", "pixel_values", "input_features") if k in inputs), None)
    if main is None:
        raise InputError("LRP needs input_ids, pixel_values or input_features")
    size = int(inputs[main].shape[0])
    if size != 1 and main != "input_ids":
        raise InputError("LRP explains a batch of texts (token ids); pixels and audio one example at a time")
    if size != 1 and budget:
        raise InputError("the relevance budget is computed for one example at a time")
    inputs = dict(inputs)
    if getattr(model.config, "is_encoder_decoder", False) and "decoder_input_ids" not in inputs:
        start = model.config.decoder_start_token_id
        inputs["decoder_input_ids"] = torch.full((size, 1), int(start), device=inputs[main].device)
    layers = first_layers(model)
    many = isinstance(target, (list, tuple))
    explained = [relevance_target(t) for t in (target if many else [target])]
    if not explained:
        raise InputError("no target to explain")
    owner = threading.get_ident()
    word = model.get_input_embeddings() if main == "input_ids" or "decoder_input_ids" in inputs else None
    encoder = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else None
    names = {id(m): n for n, m in model.named_modules()}
    enc_prefix = names.get(id(encoder)) if encoder is not None else None
    # Leaves: (side, part, tensor); "bias" parts are sinks (relative position bias tables).
    leaves: list[tuple[str, str, torch.Tensor]] = []
    streams: dict[str, torch.Tensor] = {}
    counts: dict[int, int] = {}
    base_stream = None
    if baseline_ids is not None:
        base_stream = _baseline_stream(model, layers["source"], {**inputs, main: baseline_ids.to(inputs[main].device)})

    def side_of(module: torch.nn.Module) -> str:
        name = names[id(module)]
        if enc_prefix is None:
            return "source"
        if name.startswith(enc_prefix + "."):
            return "source"
        if name.startswith(names[id(model.get_decoder())] + "."):
            return "decoder"
        k = counts.get(id(module), 0)  # a table shared by both sides: the encoder calls it first
        counts[id(module)] = k + 1
        return _SIDES[min(k, 1)]

    def on_embedding(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != owner:
            return None
        name = names[id(module)]
        side = side_of(module)
        if side == "source" and (baseline_ids is not None or main == "input_features"):
            return None  # read on the first residual stream
        if "relative" in name or "rel_embed" in name:
            part = "bias"
        elif word is not None and (module is word or getattr(module, "weight", None) is word.weight):
            part = "word"
        else:
            part = "token_type" if "token_type" in name else "position"
        leaf = output.detach()
        if size > 1 and (leaf.dim() == 2 or leaf.shape[0] == 1):
            # A table read once for the whole batch (positions [1, T, D]) is added to every row: a leaf of
            # its own per row, so each text's relevance comes from its own gradient, not from the batch's sum.
            leaf = leaf.expand(size, *leaf.shape[-2:]).clone()
        leaf.requires_grad_()
        leaves.append((side, part, leaf))
        return leaf

    def on_patches(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != owner or baseline_ids is not None:
            return None
        leaf = output.detach().requires_grad_()
        leaves.append(("source", "patches", leaf))
        return leaf

    def on_stream(side: str) -> Callable[..., Any]:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            if threading.get_ident() != owner or side in streams:
                return None  # ALBERT calls its one layer group again: the first call is the stream
            x = _stream_input(args, kwargs)
            if side == "source" and base_stream is not None:
                streams["x"], streams["m"] = x.detach(), base_stream
                z = (base_stream + alpha * (x.detach() - base_stream)).requires_grad_()
                streams[side] = z
                return _with_stream(args, kwargs, z)
            if side == "source" and main == "input_features":
                z = x.detach().requires_grad_()
                streams[side] = z
                return _with_stream(args, kwargs, z)
            streams[side] = x  # inside the graph of the leaves above
            return None

        return hook

    calls: list[Any] = []
    sinks = Sinks()
    options = CaptureOptions(gradients=True, attention_rule=rule)
    vision_params: list[tuple[str, torch.Tensor]] = []
    with ExitStack() as stack:
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                stack.callback(module.register_forward_hook(on_embedding).remove)
        if main == "pixel_values":
            emb = getattr(getattr(model, "base_model", model), "embeddings", None)
            patches = getattr(emb, "patch_embeddings", None)
            if patches is None:
                raise UnsupportedModelError(f"LRP cannot find the patch embeddings of {type(model).__name__}")
            stack.callback(patches.register_forward_hook(on_patches).remove)
            vision_params = [(n, p) for n, p in emb.named_parameters(recurse=False) if n != "mask_token"]
        for side, layer in layers.items():
            stack.callback(layer.register_forward_pre_hook(on_stream(side), with_kwargs=True).remove)
        cap = getattr(model.config, "final_logit_softcapping", None)
        head = model.get_output_embeddings() if cap and hasattr(model, "get_output_embeddings") else None
        if head is not None:
            # Gemma-2 caps its logits with tanh after the head (a function call): not conservative, the
            # difference between f and the relevance entering the head is a sink.
            def on_head(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
                if threading.get_ident() == owner:
                    sinks.outputs.append(("final_logit_softcapping", out))

            stack.callback(head.register_forward_hook(on_head).remove)
        stack.enter_context(module_rules(model, rule, sinks))
        stack.enter_context(adapter.listen(model, options, calls.append))
        output = model(**inputs)
        values = [fn(output) for fn in explained]
        if any(not isinstance(v, torch.Tensor) or v.numel() != 1 for v in values):
            raise InputError("the explained target must give one scalar")
        values = [v.reshape(()) for v in values]
    if not all(v.requires_grad for v in values):
        raise InputError("the explained target does not depend on the inputs (no gradient reaches it)")
    # Every target but the last keeps the graph for the next one's backward (the rules live in the graph).
    out = [
        _backward(
            model,
            v,
            rule,
            leaves,
            streams,
            vision_params,
            calls,
            sinks,
            budget,
            baseline_ids,
            inputs,
            main,
            retain=i < len(values) - 1,
        )
        for i, v in enumerate(values)
    ]
    found = None if many else getattr(target, "values", None)  # a BatchTarget's per-text values
    for result in out:
        result.values = list(found) if isinstance(found, list) and len(found) == size else [result.value]
    return out if many else out[0]


def _backward(
    model: Any,
    value: torch.Tensor,
    rule: str,
    leaves: list[tuple[str, str, torch.Tensor]],
    streams: dict[str, torch.Tensor],
    vision_params: list[tuple[str, torch.Tensor]],
    calls: list[Any],
    sinks: Sinks,
    budget: bool,
    baseline_ids: torch.Tensor | None,
    inputs: dict[str, torch.Tensor],
    main: str,
    retain: bool = False,
) -> Relevance:
    """The modified backward from ``value``: relevance of every leaf, stream and (with ``budget``) sink."""
    stream_items = [(k, v) for k, v in streams.items() if k in _SIDES and v.requires_grad]
    wanted: list[torch.Tensor] = [t for _, _, t in leaves] + [v for _, v in stream_items]
    wanted += [p for _, p in vision_params]
    params: list[tuple[str, torch.Tensor]] = []
    # Attention off the interface: the probabilities the hooked modules computed (their listener's are copies).
    probs = [] if sinks.probs else [(i, c) for i, c in enumerate(calls) if c.probs.requires_grad]
    if budget:
        params = [(n, p) for n, p in model.named_parameters() if _additive(n) and p.requires_grad]
        wanted += [p for _, p in params] + [node for _, _, node in sinks.constants]
        wanted += [t for _, w, h in sinks.routers for t in (w, h)]
        wanted += [c.probs for _, c in probs] + sinks.probs + [o for _, o in sinks.outputs]
    grads = list(torch.autograd.grad(value, wanted, allow_unused=True, retain_graph=retain))

    def take(n: int) -> list[torch.Tensor | None]:
        out = grads[:n]
        del grads[:n]
        return out

    size = int(inputs[main].shape[0])

    def rel(t: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        """Per position: Σ over the hidden dimension of t ⊙ g, as [T] (batch of one) or [B, T]."""
        if g is None:
            n = t.shape[-2] if t.dim() > 1 else 1
            shape = (n,) if size == 1 else (size, n)
            return torch.zeros(shape, dtype=torch.float64, device=t.device)
        r = (t.detach() * g).sum(-1).double()
        if r.dim() <= 1:
            return r
        r = r.reshape(-1, r.shape[-1])
        return r[0] if size == 1 else r

    parts: dict[str, torch.Tensor] = {}
    biases: dict[str, float] = {}
    for (side, part, t), g in zip(leaves, take(len(leaves))):
        if part == "bias":
            biases[f"{side}.relative_bias.{len(biases)}"] = float((t.detach() * g).sum()) if g is not None else 0.0
            continue
        key = part if side == "source" else f"decoder.{part}"
        r = rel(t, g)
        parts[key] = parts[key] + r if key in parts else r
    stream_grads = dict(zip([k for k, _ in stream_items], take(len(stream_items))))
    stream_rel = {k: rel(v, stream_grads[k]) for k, v in stream_items}
    if baseline_ids is not None:
        # R_i = Σ_d (x − m)_i,d ⊙ g(z)_i,d, z the midpoint; tokens the baseline keeps did not change.
        delta = rel(streams["x"] - streams["m"], stream_grads["source"])
        if main == "input_ids":
            same = baseline_ids.to(delta.device) == inputs[main].to(delta.device)
            same = same[0] if size == 1 else same
        else:  # pixels and frames: a position is unchanged when its first residual stream is (ViT's class token)
            same = (streams["x"] - streams["m"])[0].abs().amax(-1) == 0
        parts["delta"] = torch.where(same, torch.zeros_like(delta), delta)
    vis = {n: gp for (n, _), gp in zip(vision_params, take(len(vision_params)))}
    if main == "pixel_values" and "patches" in parts:  # with a baseline, relevance is read on the stream
        patches = parts.pop("patches")
        parts["patches"] = torch.cat([torch.zeros(1, dtype=torch.float64, device=patches.device), patches])
        t = patches.shape[0] + 1
        for n, p in vision_params:
            zero = torch.zeros(1, dtype=torch.float64, device=p.device)
            r = (p.detach() * vis[n]).sum(-1).double().reshape(-1) if vis[n] is not None else zero
            part = "cls" if "cls" in n else ("position" if "position" in n else n)
            pad = torch.zeros(t - r.shape[0], dtype=torch.float64, device=r.device)
            parts[part] = torch.cat([r, pad]) if r.shape[0] < t else r
    if "source" in stream_rel:
        parts["emb_out"] = stream_rel["source"]
    if "decoder" in stream_rel:
        parts["decoder.emb_out"] = stream_rel["decoder"]
    for side in ("", "decoder."):
        present = [parts[side + p] for p in ("word", "position", "token_type", "patches", "cls") if side + p in parts]
        if present:
            parts[side + "embedding"] = sum(present)
    if main == "input_features" and "emb_out" in parts:
        parts["embedding"] = parts["emb_out"]
    result = Relevance(
        value=float(value.detach()),
        parts={k: v.detach().cpu() for k, v in parts.items()},
        attentions=_by_kind(calls, batch=size > 1),
        biases=biases,
    )
    if budget:
        for (n, p), gp in zip(params, take(len(params))):
            result.biases[n] = float((p.detach() * gp).sum()) if gp is not None else 0.0
        for (n, c, _), gn in zip(sinks.constants, take(len(sinks.constants))):
            result.biases[n] = result.biases.get(n, 0.0) + (float((c.detach() * gn).sum()) if gn is not None else 0.0)
        for n, w, h in sinks.routers:
            gw, gh = take(2)
            own = sum(v for k, v in result.biases.items() if k.startswith(n + "."))
            r_w = float((w.detach() * gw).sum()) if gw is not None else 0.0
            r_h = float((h.detach() * gh).sum()) if gh is not None else 0.0
            result.router_leak[n] = result.router_leak.get(n, 0.0) + r_w - r_h - own
        leaks = [0.0] * len(calls)
        for (i, c), gp in zip(probs, take(len(probs))):
            leaks[i] = softmax_leak(c.probs, gp, c.sink_mass) if gp is not None else 0.0
        for p, gp in zip(sinks.probs, take(len(sinks.probs))):
            leaks.append(softmax_leak(p, gp) if gp is not None else 0.0)
        result.softmax_leak = leaks
        for n, o in sinks.outputs:
            (go,) = take(1)
            result.biases[n] = result.value - (float((o.detach() * go).sum()) if go is not None else 0.0)
    return result


def _by_kind(calls: list[Any], batch: bool = False) -> dict[str, torch.Tensor]:
    """The attention calls' probabilities stacked per kind: {kind: [L, H, Q, K]} (batch of one), or
    {kind: [B, L, H, Q, K]} with ``batch``."""
    out: dict[str, list[torch.Tensor]] = {}
    for c in sorted(calls, key=lambda c: c.layer):
        out.setdefault(c.kind, []).append(c.probs.detach() if batch else c.probs[0].detach())
    return {k: torch.stack(v, dim=1 if batch else 0).cpu() for k, v in out.items()}


def budget(
    model: Any,
    inputs: dict[str, torch.Tensor],
    target: Any,
    rule: str = "uniform",
    *,
    baseline_ids: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Every term of the relevance budget: tokens (both sides), biases and other sinks, softmax and router leaks, f.

    ``residual`` = f − (tokens + sinks + leaks); the identity rule's ε is the only thing left in it. With
    ``baseline_ids`` (``cplrp_mask``), f is the value at the midpoint the backward starts from and the source
    tokens' term is that of the first residual stream there.
    """
    r = lrp(model, inputs, target, rule, baseline_ids=baseline_ids, budget=True)
    token_parts = []
    for side in ("", "decoder."):
        found = [side + p for p in ("word", "position", "token_type", "patches", "cls") if side + p in r.parts]
        token_parts += found or ([side + "emb_out"] if side + "emb_out" in r.parts else [])
    tokens = {p: float(r.parts[p].sum()) for p in token_parts}
    biases = float(sum(r.biases.values()))
    leak = float(sum(r.softmax_leak))
    router = float(sum(r.router_leak.values()))
    total = sum(tokens.values()) + biases + leak + router
    return {
        "f": r.value,
        "tokens": tokens,
        "biases": biases,
        "bias_terms": r.biases,
        "softmax_leak": leak,
        "softmax_leak_per_layer": r.softmax_leak,
        "router_leak": router,
        "residual": r.value - total,
    }


class LRP(TargetMethod):
    """Relevance of the captured target at the input tokens, propagated with LRP rules (see the module docstring).

    ``rule``: ``"attnlrp"`` (AttnLRP's uniform rule on Q·Kᵀ and A·V) or ``"cplrp"`` (attention
    probabilities held constant). ``baseline``: ``None`` (relevance of the output itself) or ``"mask"``
    (relevance of the change from the text with every non-special token masked, read at the midpoint).
    """

    forward_passes = 1  # plus one backward pass: 3 forward-equivalents
    # capture(gradient_targets=[...]) explains many targets (generated tokens) from one forward.
    captures_many = True
    batch_targets = True  # a list of texts with a BatchTarget: one forward and one backward for the list

    def __init__(self, name: str, rule: str = "attnlrp", baseline: str | None = None, description: str = ""):
        if rule not in RULES:
            raise InputError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
        if baseline not in BASELINES:
            raise InputError(f"baseline must be None or 'mask', not {baseline!r}")
        self.name = name
        self.rule = rule
        self.baseline = baseline
        self.requires = (f"extras:{name}",)
        # Encoder-decoders: relevance of the source tokens, the keys of the cross attention a seq2seq target reads.
        self.kinds = ("self", "encoder", "cross")
        self.description = description or f"{rule} relevance" + (" against the masked text" if baseline else "")

    def capture(
        self, model: Any, tokenizer: Any = None, text: Any = None, *, inputs: Any = None, **options: Any
    ) -> AttentionRecord | list[AttentionRecord]:
        """A record of the forward the relevance came from, with the relevance in ``record.extras``.

        ``gradient_targets=[...]`` (instead of ``gradient_target``) explains each target from one forward
        (one modified backward each, :func:`lrp`) and returns one record per target.
        """
        gradient_target = options.pop("gradient_target", None)
        per_target = options.pop("gradient_targets", None)
        batched = text is not None and not isinstance(text, str)
        if batched:
            # A batch of texts: one padded forward and one backward of gradient_target, a BatchTarget
            # (the sum of each text's own target), gives each text the relevance it gets alone.
            if per_target is not None or not isinstance(gradient_target, BatchTarget):
                raise InputError(
                    f"method {self.name!r} explains one text at a time, or a list of texts with one gradient "
                    "target per text: gradient_target=BatchTarget(targets, lengths)"
                )
            if len(gradient_target.targets) != len(text):
                raise InputError(f"{len(gradient_target.targets)} batch targets for {len(text)} texts")
            one = encode_one(self.name, model, tokenizer, list(text), None, options, many=True)
            lengths = [len(info.tokens) for info in one.batch.source]
            if lengths != gradient_target.lengths:
                raise InputError(f"the batch target's lengths {gradient_target.lengths} are not the texts' {lengths}")
        else:
            one = encode_one(self.name, model, tokenizer, text, inputs, options)
        baseline_ids = masked_input(one) if self.baseline == "mask" else None
        explained = list(per_target) if per_target is not None else gradient_target
        found = lrp(model, one.inputs, explained, RULES[self.rule], adapter=one.adapter, baseline_ids=baseline_ids)
        if per_target is not None:
            return [self._record(model, one, r, baseline_ids) for r in found]
        n = one.batch.size if batched else 1  # images and audio name no tokens: their batch.size is 0
        if n == 1:
            return self._record(model, one, found, baseline_ids)
        metas = [
            {**self._meta(value, one, baseline_ids), "batch_size": n}  # one forward and one backward for the batch
            for value in found.values
        ]
        out = one.records(model, found.attentions, metas)
        source, decoder = one.batch.source_mask.bool(), one.batch.target_mask
        for b, record in enumerate(out):
            for part, values in found.parts.items():
                # Right padding: the text's tokens first; pad positions carry no relevance of this text. An
                # encoder-decoder's decoder parts are cut by the decoder's mask (all its rows when it has none).
                mask = (decoder.bool() if decoder is not None else None) if part.startswith("decoder.") else source
                row = values[b] if mask is None else values[b][mask[b].to(values.device)]
                record.extras[f"{self.name}.{part}"] = row.to(torch.float64)
        return out

    def _meta(self, value: float, one: OneExample, baseline_ids: Any) -> dict[str, Any]:
        info: dict[str, Any] = {"rule": self.rule, "baseline": self.baseline, "explained_value": value}
        if baseline_ids is not None:
            masked = "the masked text" if "input_ids" in one.inputs else "zero pixels or frames"
            info["attention_at"] = f"the midpoint between {masked} and the input"
        return {"forward_passes": 1, "backward_passes": 1, self.name: info}

    def _record(self, model: Any, one: OneExample, r: Relevance, baseline_ids: Any) -> AttentionRecord:
        record = one.record(model, r.attentions, self._meta(r.value, one, baseline_ids))
        for part, values in r.parts.items():
            record.extras[f"{self.name}.{part}"] = values.to(torch.float64)
        return record

    def decoder_scores(self, record: AttentionRecord) -> np.ndarray | None:
        """Relevance of an encoder-decoder's decoder input tokens (the earlier generated ones), or None."""
        found = record.extras.get(f"{self.name}.decoder.embedding")
        return None if found is None else found.detach().to(torch.float64).cpu().numpy()

    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """The rules cover every module and the adapter applies the attention rule; a mask baseline has its token."""
        from ..capture.forward import select_adapter

        check_model(model, RULES[self.rule], select_adapter(model, None))
        if self.baseline == "mask" and getattr(model, "main_input_name", "input_ids") == "input_ids":
            if tokenizer is not None:
                masked_baseline(torch.zeros(1, 1, dtype=torch.long), [False], tokenizer)

    def scores(self, record: AttentionRecord, *, kind: str, part: str | None = None) -> np.ndarray:
        """Token relevances; ``part`` (no baseline only): ``"embedding"`` (default), ``"word"``, ``"position"``,
        ``"token_type"`` or ``"emb_out"``."""
        if self.baseline is not None:
            if part not in (None, "delta"):
                raise InputError(f"method {self.name!r} reads one relevance (against the masked text); no part=")
            part = "delta"
        else:
            part = part or "embedding"
            if part not in PARTS:
                raise InputError(f"part must be one of {', '.join(PARTS)}, not {part!r}")
        key = f"{self.name}.{part}"
        if key not in record.extras:
            raise MissingCaptureError(
                f"method {self.name!r} needs record.extras[{key!r}]; capture with "
                f"get_method({self.name!r}).capture(model, tokenizer, text, gradient_target=...)"
            )
        values = record.extras[key].detach().to(torch.float64).cpu().numpy()
        if values.shape != (len(record.tokens),):
            raise InputError(f"record.extras[{key!r}] has shape {values.shape}, not ({len(record.tokens)},)")
        return values


def mask_token_id(tokenizer: Any) -> int:
    """The id shap's ``Text`` masker puts in place of a masked token: the tokenizer's mask token, else the
    first token of ``"..."`` (what ``shap.maskers.Text`` uses for tokenizers without one).

    Written here rather than asked of shap (methods do not import the explain layer's libraries); a test
    checks it against ``shap.maskers.Text(tokenizer).mask_token_id`` on every tokenizer style of the zoo.
    """
    found = getattr(tokenizer, "mask_token_id", None) if getattr(tokenizer, "mask_token", None) is not None else None
    if found is None:
        try:
            ids = tokenizer("...", add_special_tokens=False)["input_ids"]
        except Exception:  # a tokenizer that cannot encode "..." offers no masking token either
            ids = []
        found = ids[0] if len(ids) else None
    if found is None:
        raise InputError(
            "baseline='mask' needs a masking token: the tokenizer has no mask_token and no token for '...' "
            "(what shap's Text masker uses then); set tokenizer.mask_token, or use 'cplrp'/'attnlrp' (baseline=None)"
        )
    return int(found)


def masked_input(one: OneExample) -> torch.Tensor:
    """The baseline ``cplrp_mask`` explains the change from: every non-special token masked (the token shap's
    ``Text`` masker uses; each text of a batch), or, for images and audio, every pixel or frame zeroed (what
    masking a patch or a frame means in shap's image and audio maskers' simplest form, and in ``bench zoo``'s
    Shapley values)."""
    if "input_ids" in one.inputs:
        special = [info.special_tokens_mask for info in one.batch.source]
        return masked_baseline(one.inputs["input_ids"], special, one.tokenizer)
    main = next(k for k in ("pixel_values", "input_features") if k in one.inputs)
    return torch.zeros_like(one.inputs[main])


def masked_baseline(ids: torch.Tensor, special: Any, tokenizer: Any) -> torch.Tensor:
    """``ids`` with every non-special token replaced by the token shap's ``Text`` masker uses (:func:`mask_token_id`).

    ``special``: the text's special-tokens mask ([T] for ``ids`` [1, T]), or one mask per row of a
    right-padded batch (each as long as its text; the padding after it is kept as it is).
    """
    if tokenizer is None:
        raise InputError("baseline='mask' needs the tokenizer (its mask token, or shap's '...')")
    mask_id = mask_token_id(tokenizer)
    rows = [special] if ids.shape[0] == 1 and special is not None and not _nested(special) else special
    if rows is None or len(rows) != ids.shape[0] or any(r is None or len(r) > ids.shape[1] for r in rows):
        raise InputError("baseline='mask' needs the special-tokens mask of the text")
    if ids.shape[0] == 1 and len(rows[0]) != ids.shape[1]:
        raise InputError("baseline='mask' needs the special-tokens mask of the text")
    keep = torch.ones(ids.shape, dtype=torch.bool)
    for b, r in enumerate(rows):  # one row per text (not per token): the masks have the texts' lengths
        keep[b, : len(r)] = torch.as_tensor(list(r), dtype=torch.bool)
    out = ids.clone()
    out[~keep.to(ids.device)] = int(mask_id)
    return out


def _nested(special: Any) -> bool:
    """Whether ``special`` holds one mask per row rather than one mask."""
    first = next(iter(special), None)
    return first is not None and not isinstance(first, (bool, int, np.bool_, np.integer))


@dataclass
class OneExample:
    """One example encoded for a method that runs its own instrumented forward (LRP, DecompX)."""

    batch: Any  # EncodedBatch of one example
    inputs: dict[str, torch.Tensor]  # the model's keyword arguments
    adapter: Any
    tokenizer: Any

    def record(
        self, model: Any, attentions: torch.Tensor | dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> AttentionRecord:
        """The example's record holding ``attentions`` ([L, H, T, T], or {kind: [L, H, Q, K]}) of the method's forward."""
        full = {**self.adapter.describe(model), **meta}
        kinds = attentions if isinstance(attentions, dict) else {"self": attentions}
        (record,) = split_batch(self.batch, {k: v[None] for k, v in kinds.items()}, options=CaptureOptions(), meta=full)
        return record

    def records(
        self, model: Any, attentions: dict[str, torch.Tensor], metas: list[dict[str, Any]]
    ) -> list[AttentionRecord]:
        """One record per example of a batch: ``attentions`` {kind: [B, L, H, Q, K]} cut to each text's tokens."""
        out = split_batch(self.batch, attentions, options=CaptureOptions(), meta=self.adapter.describe(model))
        for record, meta in zip(out, metas):
            record.meta.update(meta)
        return out


def encode_one(
    name: str, model: Any, tokenizer: Any, text: Any, inputs: Any, options: dict[str, Any], many: bool = False
) -> OneExample:
    """Encode one text (or take tokenized ``inputs``) as ``ap.capture`` does, and pick the adapter; ``many``:
    a list of texts, right-padded into one batch."""
    from ..capture.encoding import encode, encode_inputs
    from ..capture.forward import check_model_device, select_adapter

    unknown = sorted(set(options) - {"truncation", "max_length", "adapter"})
    if unknown:
        raise InputError(f"method {name!r} captures take no option {', '.join(map(repr, unknown))}")
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    check_model_device(model)
    if (text is None) == (inputs is None):
        raise InputError("pass either text (with a tokenizer) or inputs=, not both or neither")
    if text is not None:
        if many != (not isinstance(text, str)) or (many and not all(isinstance(t, str) for t in text)):
            raise InputError(f"method {name!r} explains one text at a time, or a list of texts with a batch target")
        if tokenizer is None:
            raise InputError("capturing from text needs a tokenizer; or pass inputs= with token ids")
        batch = encode(
            model, tokenizer, text, truncation=options.get("truncation", False), max_length=options.get("max_length")
        )
    else:
        batch = encode_inputs(model, inputs, tokenizer=tokenizer)
    # Images and audio name no tokens (an empty source): their batch size is the main tensor's first axis.
    size = batch.size or next(
        (int(batch.inputs[k].shape[0]) for k in ("pixel_values", "input_features") if k in batch.inputs), 0
    )
    if size != 1 and not many:
        raise InputError(f"method {name!r} explains one example at a time")
    keys = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "input_features", "decoder_input_ids")
    model_inputs = {k: v for k, v in batch.inputs.items() if k in keys + ("decoder_attention_mask",)}
    return OneExample(batch, model_inputs, select_adapter(model, options.get("adapter")), tokenizer)
