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

Both cost one forward and one backward pass (3 forward-equivalents). The rules are implemented for the
BERT family (BERT, RoBERTa, XLM-RoBERTa, ELECTRA encoders and their sequence/token classification
heads); any other module is refused by name (:func:`check_model`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..adapters import ATTENTION_RULES, CaptureOptions, split_batch, target_scalar
from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import AttentionRecord
from .base import TargetMethod

# LRP name -> the attention rule of the capture function (attn_plugins.adapters.ATTENTION_RULES).
RULES = {"attnlrp": "uniform", "cplrp": "detached"}
PARTS = ("embedding", "word", "position", "token_type", "emb_out")
BASELINES = (None, "mask")
# The identity rule's ε (lxt's identity_rule_implicit uses the same).
IDENTITY_EPS = 1e-10

# Composite modules whose forward only adds, reshapes and calls child modules (and the attention
# function): the rules of their children cover them. Family prefix x role suffix.
_FAMILIES = ("Bert", "Roberta", "XLMRoberta", "Electra")
_ROLES = (
    "Model",
    "Embeddings",
    "Encoder",
    "Layer",
    "Attention",
    "SelfAttention",
    "SelfOutput",
    "Intermediate",
    "Output",
    "Pooler",
    "ForSequenceClassification",
    "ForTokenClassification",
)
_COMPOSITES = {f + r for f in _FAMILIES for r in _ROLES} | {"ModuleList", "Sequential", "ModuleDict"}
# BertForSequenceClassification reads the pooler's tanh; RoBERTa's and ELECTRA's classification heads call
# activation functions inside their forward, where no hook reaches: they are not in _COMPOSITES.


def _activation_classes() -> tuple[type, ...]:
    """Element-wise activation modules handled by the identity rule."""
    classes: list[type] = [torch.nn.GELU, torch.nn.Tanh, torch.nn.ReLU]
    try:
        from transformers import activations
    except ImportError:  # pragma: no cover - transformers is a dependency
        return tuple(classes)
    for name in ("GELUActivation", "NewGELUActivation", "FastGELUActivation", "QuickGELUActivation"):
        cls = getattr(activations, name, None)
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


def module_rule(module: torch.nn.Module) -> str | None:
    """The rule LRP applies to ``module`` (None when it has none)."""
    if isinstance(module, torch.nn.LayerNorm):
        return "layernorm"
    if isinstance(module, _activation_classes()):
        return "identity"
    if isinstance(module, (torch.nn.Linear, torch.nn.Embedding, torch.nn.Dropout, torch.nn.Identity)):
        return "linear"
    if type(module).__name__ in _COMPOSITES:
        return "composite"
    return None


def check_model(model: Any, rule: str | None, adapter: Any, what: str = "LRP") -> None:
    """UnsupportedModelError naming the first module ``what`` has no rule for, or the attention ``rule`` cannot reach."""
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedModelError(f"{what} needs a torch model, got {type(model).__name__}")
    modules = list(model.named_modules())
    # Leaves first: a missing rule deep inside (a normalization, an activation) says more than the model's class.
    ordered = [m for m in modules if not any(True for _ in m[1].children())] + modules
    for name, module in ordered:
        if module_rule(module) is None:
            raise UnsupportedModelError(
                f"{what} has no rule for module {name or '(the model)'!r} ({type(module).__name__}) of "
                f"{type(model).__name__}; rules exist for BERT-family encoders (Linear, Embedding, LayerNorm, "
                "GELU/tanh activations, attention through the capture function)"
            )
    if rule is not None and rule not in adapter.attention_rules(model):
        where = next((n for n, m in model.named_modules() if type(m).__name__.endswith("SelfAttention")), "attention")
        raise UnsupportedModelError(
            f"{what} needs the {rule!r} attention rule inside {where!r} of {type(model).__name__}, and the "
            f"{adapter.name!r} adapter cannot apply it (it applies {list(adapter.attention_rules(model)) or 'none'})"
        )
    if getattr(model, "training", False):
        raise InputError(f"{what} needs the model in eval mode (dropout would change the result): call model.eval()")


class _IdentityRule(torch.autograd.Function):
    """y = f(x) unchanged; backward g(x) = g(y)·y/(x + ε), so x·g(x) = y·g(y): relevance passes through."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y / (x + IDENTITY_EPS))
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


def layer_norm_rule(module: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm with σ detached: the same values, and a backward that treats 1/σ as a constant."""
    dims = tuple(range(-len(module.normalized_shape), 0))
    centered = x - x.mean(dims, keepdim=True)
    sigma = (centered.pow(2).mean(dims, keepdim=True) + module.eps).sqrt().detach()
    y = centered / sigma
    if module.weight is not None:
        y = y * module.weight
    if module.bias is not None:
        y = y + module.bias
    return y


@contextmanager
def module_rules(model: torch.nn.Module) -> Iterator[None]:
    """Forward hooks applying the LayerNorm and identity rules, for forwards run by this thread only.

    Models are shared: another thread running the same model meanwhile gets its plain backward.
    """
    owner = threading.get_ident()

    def on_layer_norm(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return layer_norm_rule(module, args[0]) if threading.get_ident() == owner else None

    def on_activation(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return _IdentityRule.apply(args[0], output.detach()) if threading.get_ident() == owner else None

    handles = []
    try:
        for module in model.modules():
            rule = module_rule(module)
            if rule == "layernorm":
                handles.append(module.register_forward_hook(on_layer_norm))
            elif rule == "identity":
                handles.append(module.register_forward_hook(on_activation))
        yield
    finally:
        for handle in handles:
            handle.remove()


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

    value: float  # the explained output at the point the backward started from
    parts: dict[str, torch.Tensor]  # part name -> [T]
    attentions: torch.Tensor  # [L, H, T, T] of that forward (at the midpoint for baseline="mask")
    biases: dict[str, float] = field(default_factory=dict)  # parameter name -> b · g(b)
    softmax_leak: list[float] = field(default_factory=list)  # per layer: Σ R(A) − Σ R(s)


def softmax_leak(probs: torch.Tensor, grad: torch.Tensor) -> float:
    """Σ R(A) − Σ R(s) of one layer's softmax, from its probabilities A and their modified gradient g(A).

    With the plain softmax backward g(s) = A ⊙ (g(A) − ⟨A, g(A)⟩) and s = log A + a per-row constant
    (which g(s) sums to zero against), Σ s ⊙ g(s) needs no access to the scores themselves.
    """
    a = probs.detach().double()
    g = grad.detach().double()
    g_s = a * (g - (a * g).sum(-1, keepdim=True))
    log_a = torch.where(a > 0, a.clamp_min(1e-300).log(), torch.zeros_like(a))
    return float((a * g).sum() - (log_a * g_s).sum())


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
) -> Relevance:
    """One forward and one modified backward of ``model`` on ``inputs`` (one example), explaining ``target``.

    ``rule`` is an attention rule (``"uniform"``: AttnLRP, ``"detached"``: CP-LRP). ``baseline_ids``
    (the input ids with tokens replaced) switches to the midpoint readout against that baseline
    (part ``"delta"``). ``budget`` also returns every bias's b · g(b) and each layer's softmax leak.
    """
    from ..capture.forward import select_adapter

    if rule not in ATTENTION_RULES:
        raise InputError(f"attention rule must be one of {', '.join(ATTENTION_RULES)}, not {rule!r}")
    adapter = adapter or select_adapter(model)
    check_model(model, rule, adapter)
    ids = inputs["input_ids"]
    if ids.shape[0] != 1:
        raise InputError("LRP explains one example at a time")
    mods = embedding_modules(model)
    explained = relevance_target(target)
    store: dict[str, torch.Tensor] = {}
    owner = threading.get_ident()
    extra = {k: v for k, v in inputs.items() if k in ("token_type_ids", "position_ids")}
    if baseline_ids is not None:
        with torch.no_grad():
            base_out = mods["block"](input_ids=baseline_ids.to(ids.device), **extra)

    def leaf(name: str) -> Callable[..., torch.Tensor | None]:
        """Replace a module's output by a leaf that requires grad (its relevance is read there)."""

        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if threading.get_ident() != owner:
                return None
            if name == "block" and baseline_ids is not None:
                store["x"] = output.detach()
                z = (base_out + alpha * (output.detach() - base_out)).requires_grad_()
                store["z"] = z
                return z
            if name == "block":
                store["emb_out"] = output  # inside the graph of the leaves below
                return None
            out = output.detach().requires_grad_()
            store[name] = out
            return out

        return hook

    calls: list[Any] = []
    options = CaptureOptions(gradients=True, attention_rule=rule)
    with ExitStack() as stack:
        if baseline_ids is None:
            for name in ("word", "position", "token_type"):
                if name in mods:
                    stack.callback(mods[name].register_forward_hook(leaf(name)).remove)
        stack.callback(mods["block"].register_forward_hook(leaf("block")).remove)
        stack.enter_context(module_rules(model))
        stack.enter_context(adapter.listen(model, options, calls.append))
        output = model(**inputs)
        value = explained(output)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise InputError("the explained target must give one scalar")
        value = value.reshape(())
    reads = (
        ["z"] if baseline_ids is not None else [n for n in ("word", "position", "token_type", "emb_out") if n in store]
    )
    tensors = [store[n] for n in reads]
    params: list[tuple[str, torch.Tensor]] = []
    probs = [c.probs for c in calls]
    if budget:
        params = [(n, p) for n, p in model.named_parameters() if n.endswith("bias") and p.requires_grad]
    wanted = tensors + [p for _, p in params] + (probs if budget and rule == "uniform" else [])
    grads = torch.autograd.grad(value, wanted, allow_unused=True)
    g = dict(zip(reads, grads[: len(reads)]))
    parts: dict[str, torch.Tensor] = {}
    if baseline_ids is not None:
        delta = ((store["x"] - base_out) * g["z"]).sum(-1)[0].detach()
        # Tokens the baseline keeps (special tokens) did not change: nothing to explain there.
        parts["delta"] = torch.where(baseline_ids[0].to(ids.device) == ids[0], torch.zeros_like(delta), delta)
    else:
        for n in reads:
            r = (store[n] * g[n]).sum(-1).detach()
            parts[n] = r.reshape(-1, r.shape[-1])[0] if r.dim() > 1 else r
        parts["embedding"] = sum(parts[n] for n in ("word", "position", "token_type") if n in parts)
    result = Relevance(
        value=float(value.detach()),
        parts={k: v.cpu() for k, v in parts.items()},
        attentions=torch.stack([p[0].detach() for p in probs]).cpu(),
    )
    if budget:
        rest = grads[len(reads) :]
        for (n, p), gp in zip(params, rest[: len(params)]):
            result.biases[n] = float((p.detach() * gp).sum()) if gp is not None else 0.0
        leak_grads = rest[len(params) :]
        result.softmax_leak = [softmax_leak(p, gp) if gp is not None else 0.0 for p, gp in zip(probs, leak_grads)] or [
            0.0
        ] * len(probs)
    return result


def budget(model: Any, inputs: dict[str, torch.Tensor], target: Any, rule: str = "uniform") -> dict[str, Any]:
    """Every term of the relevance budget: tokens (word, position, type), biases, softmax leaks, and f.

    ``residual`` = f − (tokens + biases + leaks); the identity rule's ε is the only thing left in it.
    """
    r = lrp(model, inputs, target, rule, budget=True)
    tokens = {p: float(r.parts[p].sum()) for p in ("word", "position", "token_type") if p in r.parts}
    biases = float(sum(r.biases.values()))
    leak = float(sum(r.softmax_leak))
    total = sum(tokens.values()) + biases + leak
    return {
        "f": r.value,
        "tokens": tokens,
        "biases": biases,
        "bias_terms": r.biases,
        "softmax_leak": leak,
        "softmax_leak_per_layer": r.softmax_leak,
        "residual": r.value - total,
    }


class LRP(TargetMethod):
    """Relevance of the captured target at the input tokens, propagated with LRP rules (see the module docstring).

    ``rule``: ``"attnlrp"`` (AttnLRP's uniform rule on Q·Kᵀ and A·V) or ``"cplrp"`` (attention
    probabilities held constant). ``baseline``: ``None`` (relevance of the output itself) or ``"mask"``
    (relevance of the change from the text with every non-special token masked, read at the midpoint).
    """

    forward_passes = 1  # plus one backward pass: 3 forward-equivalents

    def __init__(self, name: str, rule: str = "attnlrp", baseline: str | None = None, description: str = ""):
        if rule not in RULES:
            raise InputError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
        if baseline not in BASELINES:
            raise InputError(f"baseline must be None or 'mask', not {baseline!r}")
        self.name = name
        self.rule = rule
        self.baseline = baseline
        self.requires = (f"extras:{name}",)
        self.kinds = ("self",)
        self.description = description or f"{rule} relevance" + (" against the masked text" if baseline else "")

    def capture(
        self, model: Any, tokenizer: Any = None, text: Any = None, *, inputs: Any = None, **options: Any
    ) -> AttentionRecord:
        """A record of the forward the relevance came from, with the relevance in ``record.extras``."""
        gradient_target = options.pop("gradient_target", None)
        one = encode_one(self.name, model, tokenizer, text, inputs, options)
        baseline_ids = None
        if self.baseline == "mask":
            special = one.batch.source[0].special_tokens_mask
            baseline_ids = masked_baseline(one.inputs["input_ids"], special, one.tokenizer)
        r = lrp(model, one.inputs, gradient_target, RULES[self.rule], adapter=one.adapter, baseline_ids=baseline_ids)
        info: dict[str, Any] = {"rule": self.rule, "baseline": self.baseline, "explained_value": r.value}
        if baseline_ids is not None:
            info["attention_at"] = "the midpoint between the masked text and the text"
        record = one.record(model, r.attentions, {"forward_passes": 1, "backward_passes": 1, self.name: info})
        for part, values in r.parts.items():
            record.extras[f"{self.name}.{part}"] = values.to(torch.float64)
        return record

    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """The rules cover every module and the adapter applies the attention rule; a mask baseline has its token."""
        from ..capture.forward import select_adapter

        check_model(model, RULES[self.rule], select_adapter(model, None))
        if self.baseline == "mask" and tokenizer is not None:
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
        values = record.extras[key].detach().to(torch.float64).numpy()
        if values.shape != (len(record.tokens),):
            raise InputError(f"record.extras[{key!r}] has shape {values.shape}, not ({len(record.tokens)},)")
        return values


def masked_baseline(ids: torch.Tensor, special: list[bool] | None, tokenizer: Any) -> torch.Tensor:
    """``ids`` with every non-special token replaced by the tokenizer's mask token (what a Text masker masks)."""
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise InputError("baseline='mask' needs a tokenizer with a mask token")
    if special is None or len(special) != ids.shape[1]:
        raise InputError("baseline='mask' needs the special-tokens mask of the text")
    out = ids.clone()
    out[0, ~torch.as_tensor(special, dtype=torch.bool)] = int(mask_id)
    return out


@dataclass
class OneExample:
    """One example encoded for a method that runs its own instrumented forward (LRP, DecompX)."""

    batch: Any  # EncodedBatch of one example
    inputs: dict[str, torch.Tensor]  # the model's keyword arguments
    adapter: Any
    tokenizer: Any

    def record(self, model: Any, attentions: torch.Tensor, meta: dict[str, Any]) -> AttentionRecord:
        """The example's record holding ``attentions`` [L, H, T, T] of the method's forward."""
        full = {**self.adapter.describe(model), **meta}
        (record,) = split_batch(self.batch, {"self": attentions[None]}, options=CaptureOptions(), meta=full)
        return record


def encode_one(name: str, model: Any, tokenizer: Any, text: Any, inputs: Any, options: dict[str, Any]) -> OneExample:
    """Encode one text (or take tokenized ``inputs``) as ``ap.capture`` does, and pick the adapter."""
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
        if not isinstance(text, str):
            raise InputError(f"method {name!r} explains one text at a time")
        if tokenizer is None:
            raise InputError("capturing from text needs a tokenizer; or pass inputs= with token ids")
        batch = encode(
            model, tokenizer, text, truncation=options.get("truncation", False), max_length=options.get("max_length")
        )
    else:
        batch = encode_inputs(model, inputs, tokenizer=tokenizer)
    if batch.size != 1:
        raise InputError(f"method {name!r} explains one example at a time")
    model_inputs = {k: v for k, v in batch.inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    return OneExample(batch, model_inputs, select_adapter(model, options.get("adapter")), tokenizer)
