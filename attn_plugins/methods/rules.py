"""The LRP rule table: one relevance rule per kind of operation, and per architecture a few rows naming its modules.

Relevance is input × modified gradient (lxt's "efficient" formulation, see :mod:`.lrp`); a rule changes the
backward pass of one kind of operation and never the forward values. The kinds:

================  ==========================================================  ================================
kind              rule                                                        modules (rows below)
================  ==========================================================  ================================
``linear``        ε-rule, ε → 0: the plain gradient (a bias keeps b ⊙ g(b))    Linear, GPT-2's Conv1D, Conv1d/2d
                                                                              (ViT patches, Whisper's stem),
                                                                              Embedding, Dropout, Identity
``layernorm``     identity on 1/σ: σ detached, the centering is linear         ``nn.LayerNorm``
``identity``      g(x) = g(y)·y/(x + ε): x ⊙ g(x) = y ⊙ g(y)                    activations (GELU, GELU-tanh,
                                                                              SiLU, ReLU, tanh...), RMSNorm
                                                                              (1/rms and the gain w or 1 + w
                                                                              held constant), Qwen3's q/k norms
``constant``      outputs are constants (nothing to propagate)                rotary embeddings (cos, sin)
``composite``     only adds, reshapes and calls children (and the attention   layers, blocks, models
                  function, whose rules are the capture function's):
                  parallel attention + MLP blocks are sums
``gated``         uniform rule on act(gate) ⊙ up: the gradient of each        SwiGLU/GeGLU MLPs
                  operand halved (at the children that produce them)
``experts``       gated experts, and the uniform rule on router weight ×      Mixtral's, gpt-oss's experts
                  expert output (recomputed in a forward hook)
``router``        softmax/top-k routing: not conservative; what reaches the   Mixtral's, gpt-oss's routers
                  router weights and does not come back into the stream
                  is a sink (measured)
``attention``     attention modules off transformers' interface: Q·Kᵀ and     bloom, DeBERTa-v2, MPNet
                  A·V rules by hooks (q/k projections, a fused qkv per
                  head, the context), the probabilities detached for
                  CP-LRP; ALiBi is a sink; DeBERTa's c2p/p2c products
                  are halved too (half reaches the position table: a sink)
================  ==========================================================  ================================

Attention on transformers' interface gets its rules inside the capture function (``attention_rule``), where
soft-capping (Gemma-2: the identity rule on tanh), learned sinks (gpt-oss) and relative position biases (T5)
are handled; the softmax keeps its plain gradient (AttnLRP's rule), which leaks (:func:`.lrp.softmax_leak`).

Activations called as functions inside a forward (Whisper's stem: ``nn.functional.gelu``) get the identity
rule through :func:`functional_rules`, which switches ``torch.nn.functional.gelu``/``silu``/``relu`` for the
thread running LRP only.

A plugin adds a row with :func:`add_rows` (class name -> kind, or for ``gated``/``attention`` a
:class:`Row` naming the children).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..adapters import scale_gradient
from ..errors import InputError, UnsupportedModelError

# The identity rule's ε (lxt's identity_rule_implicit uses the same).
IDENTITY_EPS = 1e-10
KINDS = ("linear", "layernorm", "identity", "constant", "composite", "gated", "experts", "router", "attention")


@dataclass(frozen=True)
class Row:
    """One table row: a module class (by name) and its kind, with the children a rule acts on."""

    kind: str
    operands: tuple[str, ...] = ()  # gated: children whose outputs are the operands of the gate product
    q: tuple[str, ...] = ()  # attention: query projections
    k: tuple[str, ...] = ()  # attention: key projections
    qkv: str | None = None  # attention: a fused projection laid out [.., heads, 3, head_dim]
    context: str | None = None  # attention: the child fed the context A·V (None: the module's own output[0])
    constants: tuple[str, ...] = ()  # attention: keyword inputs that are constants added to the scores (sinks)
    optional: tuple[str, ...] = ()  # attention: q/k children some configurations of the module lack
    layout: str = ""  # experts: "mixtral" or "gpt_oss"


def _composites(prefix: str, *roles: str) -> dict[str, Row]:
    return {prefix + r: Row("composite") for r in roles}


_BERT_ROLES = (
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
_DEC = ("Model", "ForCausalLM", "DecoderLayer", "Attention")
_S2S = ("Model", "Attention", "Encoder", "Decoder", "EncoderLayer", "DecoderLayer")
_SWIGLU = Row("gated", operands=("gate_proj", "up_proj"))

# Architecture -> rows. Leaf classes shared by all (Linear, LayerNorm, activations...) are matched by type below.
ARCHITECTURES: dict[str, dict[str, Row]] = {
    "bert-family": {
        k: v for f in ("Bert", "Roberta", "XLMRoberta", "Electra") for k, v in _composites(f, *_BERT_ROLES).items()
    },
    "distilbert": _composites("", "DistilBertModel", "DistilBertSelfAttention", "Embeddings", "FFN", "Transformer")
    | _composites("", "TransformerBlock", "DistilBertForSequenceClassification"),
    "albert": _composites("Albert", "Attention", "Embeddings", "Layer", "LayerGroup", "Model", "Transformer"),
    "deberta-v2": _composites("DebertaV2", "Attention", "Embeddings", "Encoder", "Intermediate", "Layer", "Model")
    | _composites("DebertaV2", "Output", "SelfOutput")
    | {
        # c2p = Q·(P W_k)ᵀ and p2c = K·(P W_q)ᵀ are products too: the uniform rule halves the gradient of the
        # position operands as well (their projections pos_key_proj/pos_query_proj, or the shared key/query
        # projections with share_att_key); that half reaches the position table rel_embeddings (a sink).
        "DisentangledSelfAttention": Row(
            "attention",
            q=("query_proj", "pos_query_proj"),
            k=("key_proj", "pos_key_proj"),
            optional=("pos_query_proj", "pos_key_proj"),
        )
    },
    "mpnet": _composites("MPNet", "Attention", "Embeddings", "Encoder", "Intermediate", "Layer", "Model", "Output")
    | _composites("MPNet", "Pooler")
    | {"MPNetSelfAttention": Row("attention", q=("q",), k=("k",), context="o")},
    "modernbert": _composites("ModernBert", "Attention", "Embeddings", "EncoderLayer", "Model")
    | {"ModernBertMLP": Row("gated", operands=("Wi",)), "ModernBertRotaryEmbedding": Row("constant")},
    "gpt2": _composites("GPT2", "Attention", "Block", "LMHeadModel", "MLP", "Model"),
    "gpt_neox": _composites("GPTNeoX", "Attention", "ForCausalLM", "Layer", "MLP", "Model")
    | {"GPTNeoXRotaryEmbedding": Row("constant")},
    "gptj": _composites("GPTJ", "Attention", "Block", "ForCausalLM", "MLP", "Model")
    | {"GPTJRotaryEmbedding": Row("constant")},
    "opt": _composites("OPT", "Attention", "Decoder", "DecoderLayer", "ForCausalLM", "Model"),
    "falcon": _composites("Falcon", *_DEC, "MLP") | {"FalconRotaryEmbedding": Row("constant")},
    "phi": _composites("Phi", *_DEC, "MLP") | {"PhiRotaryEmbedding": Row("constant")},
    "phi3": _composites("Phi3", *_DEC)
    | {"Phi3MLP": Row("gated", operands=("gate_up_proj",)), "Phi3RotaryEmbedding": Row("constant")},
    "bloom": _composites("Bloom", "Block", "ForCausalLM", "MLP", "Model")
    | {
        "BloomAttention": Row("attention", qkv="query_key_value", context="dense", constants=("alibi",)),
        "BloomGelu": Row("identity"),
    },
    "mixtral": _composites("Mixtral", *_DEC, "SparseMoeBlock")
    | {
        "MixtralExperts": Row("experts", layout="mixtral"),
        "MixtralTopKRouter": Row("router"),
        "MixtralRotaryEmbedding": Row("constant"),
    },
    "gpt_oss": _composites("GptOss", *_DEC, "MLP")
    | {
        "GptOssExperts": Row("experts", layout="gpt_oss"),
        "GptOssTopKRouter": Row("router"),
        "GptOssRotaryEmbedding": Row("constant"),
    },
    "t5": _composites("T5", "Attention", "Block", "DenseActDense", "ForConditionalGeneration", "LayerCrossAttention")
    | _composites("T5", "LayerFF", "LayerSelfAttention", "Stack", "Model", "EncoderModel")
    | {"T5DenseGatedActDense": Row("gated", operands=("wi_0", "wi_1"))},
    "vit": _composites("ViT", "Attention", "Embeddings", "Layer", "MLP", "Model", "PatchEmbeddings", "Pooler")
    | _composites("ViT", "SelfAttention", "SelfOutput", "Intermediate", "Output", "ForImageClassification"),
    "whisper": _composites("Whisper", *_S2S, "ForConditionalGeneration"),
}
for _fam in ("Llama", "Mistral", "Qwen2", "Qwen3", "Gemma", "Gemma2", "Gemma3"):
    ARCHITECTURES[_fam.lower()] = _composites(_fam, *_DEC) | {
        f"{_fam}MLP": _SWIGLU,
        f"{_fam}RotaryEmbedding": Row("constant"),
        f"{_fam}RMSNorm": Row("identity"),
    }
ARCHITECTURES["gemma3"]["Gemma3TextModel"] = Row("composite")
for _fam, _head in (("Bart", "ForConditionalGeneration"), ("MBart", "ForConditionalGeneration")):
    ARCHITECTURES[_fam.lower()] = _composites(_fam, *_S2S, _head)
ARCHITECTURES["marian"] = _composites("Marian", *_S2S, "MTModel")
ARCHITECTURES["pegasus"] = _composites("Pegasus", *_S2S, "ForConditionalGeneration")
for _fam in ("Mixtral", "Phi3", "GptOss"):
    ARCHITECTURES[_fam.lower() if _fam != "GptOss" else "gpt_oss"][f"{_fam}RMSNorm"] = Row("identity")
ARCHITECTURES["t5"]["T5LayerNorm"] = Row("identity")
# Task heads whose forward is a linear read-out of the hidden states (a Linear, a dropout, a split or a gather of
# the last real token): composites. Heads that call an activation inside their own forward (RoBERTa's and
# BART's classification heads call tanh there, where no hook reaches) are left out and refused by name.
_LINEAR_HEADS = {
    "bert-family": (("Bert", "Roberta", "XLMRoberta", "Electra"), ("ForQuestionAnswering",)),
    "distilbert": (("DistilBert",), ("ForQuestionAnswering", "ForTokenClassification")),
}
for _fam, _key in (
    ("GPT2", "gpt2"), ("GPTNeoX", "gpt_neox"), ("GPTJ", "gptj"), ("OPT", "opt"), ("Falcon", "falcon"),
    ("Phi", "phi"), ("Phi3", "phi3"), ("Bloom", "bloom"), ("Mixtral", "mixtral"), ("GptOss", "gpt_oss"),
    ("Llama", "llama"), ("Mistral", "mistral"), ("Qwen2", "qwen2"), ("Qwen3", "qwen3"), ("Gemma", "gemma"),
    ("Gemma2", "gemma2"),
):  # fmt: skip
    _LINEAR_HEADS[_key] = ((_fam,), ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering"))
for _key, (_prefixes, _heads) in _LINEAR_HEADS.items():
    for _prefix in _prefixes:
        ARCHITECTURES[_key].update(_composites(_prefix, *_heads))
ARCHITECTURES["generic"] = _composites("", "ModuleList", "Sequential", "ModuleDict")

# Class name -> row: the union of every architecture's rows (plugins add theirs with add_rows).
ROWS: dict[str, Row] = {}
for _rows in ARCHITECTURES.values():
    ROWS.update(_rows)
_ROWS_LOCK = threading.Lock()


def add_rows(rows: dict[str, str | Row]) -> None:
    """Add table rows (class name -> kind or :class:`Row`), e.g. from a plugin for its own architecture."""
    checked = {name: Row(r) if isinstance(r, str) else r for name, r in rows.items()}
    for name, row in checked.items():
        if row.kind not in KINDS:
            raise InputError(f"row {name!r}: kind must be one of {', '.join(KINDS)}, not {row.kind!r}")
    with _ROWS_LOCK:
        ROWS.update(checked)


def _activation_classes() -> tuple[type, ...]:
    """Element-wise activation modules of torch and transformers (the identity rule)."""
    classes: list[type] = [torch.nn.GELU, torch.nn.Tanh, torch.nn.ReLU, torch.nn.SiLU, torch.nn.Sigmoid]
    try:
        from transformers import activations
    except ImportError:  # pragma: no cover - transformers is a dependency
        return tuple(classes)
    for name in (
        "GELUActivation",
        "NewGELUActivation",
        "FastGELUActivation",
        "QuickGELUActivation",
        "GELUTanh",
        "PytorchGELUTanh",
        "SiLUActivation",
        "AccurateGELUActivation",
        "ClippedGELUActivation",
    ):
        cls = getattr(activations, name, None)
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


_LINEAR = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Dropout, torch.nn.Identity, torch.nn.Conv1d, torch.nn.Conv2d)


def module_row(module: torch.nn.Module) -> Row | None:
    """The table row of ``module`` (None when the table has none)."""
    row = ROWS.get(type(module).__name__)
    if row is not None:
        return row
    if isinstance(module, torch.nn.LayerNorm):
        return Row("layernorm")
    if isinstance(module, _activation_classes()):
        return Row("identity")
    if isinstance(module, _LINEAR) or type(module).__name__ == "Conv1D":
        return Row("linear")
    return None


def module_rule(module: torch.nn.Module) -> str | None:
    """The kind of rule LRP applies to ``module`` (None when it has none)."""
    row = module_row(module)
    return row.kind if row is not None else None


def _suggested_rows(module: torch.nn.Module) -> str:
    """The rows a plugin would add for an unknown module, guessed from its children."""
    name = type(module).__name__
    children = [n for n, _ in module.named_children()]
    if not children:
        return (
            f"add_rows({{{name!r}: 'identity'}}) if it is element-wise (an activation, an RMS norm), "
            f"{{{name!r}: 'linear'}} if it is linear, {{{name!r}: 'constant'}} if its outputs are constants"
        )
    return (
        f"add_rows({{{name!r}: 'composite'}}) if its forward only adds and calls its children "
        f"({', '.join(children)}); Row('gated', operands=(...)) for a gated MLP"
    )


def check_model(model: Any, rule: str | None, adapter: Any, what: str = "LRP") -> None:
    """UnsupportedModelError naming the first module ``what`` has no rule for, or the attention ``rule`` cannot reach."""
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedModelError(f"{what} needs a torch model, got {type(model).__name__}")
    modules = list(model.named_modules())
    # Leaves first: a missing rule deep inside (a normalization, an activation) says more than the model's class.
    ordered = [m for m in modules if not any(True for _ in m[1].children())] + modules
    for name, module in ordered:
        if module_row(module) is None:
            raise UnsupportedModelError(
                f"{what} has no rule for module {name or '(the model)'!r} ({type(module).__name__}) of "
                f"{type(model).__name__}; a plugin adds the rows with attn_plugins.methods.rules."
                f"{_suggested_rows(module)}"
            )
    hooked = any(module_rule(m) == "attention" for _, m in modules)
    if rule is not None and not hooked and rule not in adapter.attention_rules(model):
        where = next((n for n, m in modules if type(m).__name__.endswith("SelfAttention")), None) or next(
            (n for n, m in modules if type(m).__name__.endswith("Attention")), "attention"
        )
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


def identity_rule(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` (= f(x), element-wise) with the identity rule's backward: relevance passes from y to x unchanged."""
    return _IdentityRule.apply(x, y.detach())


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


@dataclass
class Sinks:
    """Tensors of one forward whose relevance the rules leave behind (for :func:`.lrp.budget`)."""

    constants: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # name, c, node: Σ c·g(node)
    routers: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # name, weights out, input
    probs: list[torch.Tensor] = field(default_factory=list)  # softmax outputs inside hooked attention modules
    outputs: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # name, z: the sink is f − Σ z·g(z)


# ------------------------------------------------------------------ functional activations and softmax
_STATE = threading.local()
_PATCH_LOCK = threading.Lock()
_PATCHED: dict[str, Any] = {}
_USERS = [0]
_FUNCTIONS = ("gelu", "silu", "relu", "softmax")


def _wrapped(name: str, original: Any) -> Any:
    def call(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = original(x, *args, **kwargs)
        rule = getattr(_STATE, "rule", None)
        if rule is None:
            return y
        if name == "softmax":
            if not getattr(_STATE, "in_attention", 0):
                return y
            if rule == "detached":  # CP-LRP inside attention modules off the interface: constants
                return y.detach()
            _STATE.sinks.probs.append(y)  # AttnLRP: its leak is counted
            return y
        return identity_rule(x, y)

    call.__wrapped__ = original  # type: ignore[attr-defined]
    return call


@contextmanager
def functional_rules(rule: str | None) -> Iterator[None]:
    """The identity rule on ``torch.nn.functional`` activations (and CP-LRP's detached softmax inside hooked
    attention) for forwards run by this thread; other threads call the originals. Installed while any thread
    needs it (reference counted)."""
    functional = torch.nn.functional
    with _PATCH_LOCK:
        if _USERS[0] == 0:
            for name in _FUNCTIONS:
                _PATCHED[name] = getattr(functional, name)
                setattr(functional, name, _wrapped(name, _PATCHED[name]))
        _USERS[0] += 1
    previous = getattr(_STATE, "rule", None)
    _STATE.rule = rule or "plain"
    try:
        yield
    finally:
        _STATE.rule = previous
        with _PATCH_LOCK:
            _USERS[0] -= 1
            if _USERS[0] == 0:
                for name in _FUNCTIONS:
                    setattr(functional, name, _PATCHED.pop(name))


# ------------------------------------------------------------------ module rules by hooks
def _qkv_scale(output: torch.Tensor, factor: float, heads: int) -> torch.Tensor:
    """A fused [.., heads, 3, head_dim] projection's output with the query and key gradients scaled."""
    shape = output.shape
    # [.., heads, 3, head_dim]: the query, key and value blocks of each head (not every third feature).
    parts = output.reshape(*shape[:-1], heads, 3, -1)
    scale = torch.tensor([factor, factor, 1.0], dtype=output.dtype, device=output.device).reshape(3, 1)
    return _ScaleBy.apply(parts, scale).reshape(shape)


class _ScaleBy(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by a broadcastable tensor."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def attention_heads(module: torch.nn.Module) -> int:
    """The number of heads of an attention module (its fused qkv projection is laid out per head)."""
    for attr in ("num_heads", "num_attention_heads", "n_head"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    raise UnsupportedModelError(
        f"cannot tell the number of heads of {type(module).__name__} (its fused qkv rule needs it)"
    )


def _experts_mixtral(module: torch.nn.Module, h: torch.Tensor, index: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mixtral's experts with the rules: uniform on act(gate) ⊙ up and on expert output × router weight."""
    idx = index.clamp_max(module.num_experts - 1)
    gate_up = torch.einsum("nd,nkfd->nkf", h, module.gate_up_proj[idx])
    gate, up = scale_gradient(gate_up, 0.5).chunk(2, dim=-1)
    inner = module.act_fn(gate) * up
    out = torch.einsum("nkf,nkdf->nkd", inner, module.down_proj[idx])
    valid = (index < module.num_experts).to(out.dtype)[..., None]
    return (scale_gradient(out, 0.5) * scale_gradient(w, 0.5)[..., None] * valid).sum(1)


def _experts_gpt_oss(
    module: torch.nn.Module, h: torch.Tensor, index: torch.Tensor, w: torch.Tensor, sinks: Sinks, name: str
) -> torch.Tensor:
    """gpt-oss's experts with the rules: identity on the clamps and the sigmoid gate, uniform on the products."""
    gate_up = torch.einsum("nd,nkdf->nkf", h, module.gate_up_proj[index]) + module.gate_up_proj_bias[index]
    gate, up = gate_up[..., ::2], gate_up[..., 1::2]
    gate = identity_rule(gate, gate.clamp(max=module.limit))
    up = identity_rule(up, up.clamp(min=-module.limit, max=module.limit))
    glu = identity_rule(gate, gate * torch.sigmoid(gate * module.alpha))
    up1 = up + 1  # the constant 1 keeps 1 ⊙ g(up + 1): a sink
    sinks.constants.append((f"{name}.up+1", torch.ones_like(up1), up1))
    inner = scale_gradient(up1, 0.5) * scale_gradient(glu, 0.5)
    out = torch.einsum("nkf,nkfd->nkd", inner, module.down_proj[index]) + module.down_proj_bias[index]
    return (scale_gradient(out, 0.5) * scale_gradient(w, 0.5)[..., None]).sum(1)


@contextmanager
def module_rules(model: torch.nn.Module, rule: str | None = None, sinks: Sinks | None = None) -> Iterator[None]:
    """Hooks applying the table's rules (norms, activations, gated MLPs, experts, routers, hooked attention with
    the attention ``rule``), for forwards run by this thread only; other threads running the same model get
    the plain model."""
    owner = threading.get_ident()
    sinks = sinks if sinks is not None else Sinks()

    def mine() -> bool:
        return threading.get_ident() == owner

    def on_layer_norm(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return layer_norm_rule(module, args[0]) if mine() else None

    def on_identity(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return identity_rule(args[0], output) if mine() else None

    def on_operand(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return scale_gradient(output, 0.5) if mine() else None

    def on_router_in(module: torch.nn.Module, args: tuple) -> tuple | None:
        if not mine():
            return None
        h = args[0].view_as(args[0])  # a node of its own: its gradient is the router's path only
        module._lrp_in = h
        return (h, *args[1:])

    def on_router_out(module: torch.nn.Module, args: tuple, output: tuple) -> None:
        if mine():
            sinks.routers.append((names[id(module)], output[1], module.__dict__.pop("_lrp_in")))

    def on_experts(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not mine():
            return None
        row = module_row(module)
        h, index, w = args
        if row.layout == "gpt_oss":
            return _experts_gpt_oss(module, h, index, w, sinks, names[id(module)])
        return _experts_mixtral(module, h, index, w)

    def on_qk(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not mine() or rule is None:
            return None
        return scale_gradient(output, 0.5) if rule == "uniform" else output

    def on_qkv(heads: int) -> Any:
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            return _qkv_scale(output, 0.5, heads) if mine() and rule == "uniform" else None

        return hook

    def on_context_in(module: torch.nn.Module, args: tuple) -> tuple | None:
        if mine() and rule == "uniform":
            return (scale_gradient(args[0], 0.5), *args[1:])
        return None

    def on_attention_in(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
        if not mine():
            return None
        _STATE.in_attention = getattr(_STATE, "in_attention", 0) + 1
        row = module_row(module)
        for key in row.constants:
            if isinstance(kwargs.get(key), torch.Tensor):
                c = kwargs[key].detach().clone().requires_grad_()
                sinks.constants.append((f"{names[id(module)]}.{key}", c, c))
                kwargs[key] = c
        return args, kwargs

    def on_attention_out(module: torch.nn.Module, args: tuple, output: Any) -> Any:
        if not mine():
            return None
        _STATE.in_attention -= 1
        row = module_row(module)
        if row.context is None and rule == "uniform" and isinstance(output, tuple):
            return (scale_gradient(output[0], 0.5), *output[1:])
        return None

    names = {id(m): n for n, m in model.named_modules()}
    with ExitStack() as stack:

        def hook(module: torch.nn.Module, fn: Any, pre: bool = False, **kw: Any) -> None:
            register = module.register_forward_pre_hook if pre else module.register_forward_hook
            stack.callback(register(fn, **kw).remove)

        for module in model.modules():
            row = module_row(module)
            kind = row.kind if row is not None else None
            if kind == "layernorm":
                hook(module, on_layer_norm)
            elif kind == "identity":
                hook(module, on_identity)
            elif kind == "gated":
                for child in row.operands:
                    hook(module.get_submodule(child), on_operand)
            elif kind == "experts":
                hook(module, on_experts)
            elif kind == "router":
                hook(module, on_router_in, pre=True)
                hook(module, on_router_out)
            elif kind == "attention":
                for child in row.q + row.k:
                    if child in row.optional and not hasattr(module, child):
                        continue  # DeBERTa's position projections exist only without share_att_key
                    hook(module.get_submodule(child), on_qk)
                if row.qkv:
                    hook(module.get_submodule(row.qkv), on_qkv(attention_heads(module)))
                if row.context:
                    hook(module.get_submodule(row.context), on_context_in, pre=True)
                hook(module, on_attention_in, pre=True, with_kwargs=True)
                hook(module, on_attention_out)
        stack.enter_context(functional_rules(rule))
        previous = getattr(_STATE, "sinks", None)
        _STATE.sinks = sinks
        try:
            yield
        finally:
            _STATE.sinks = previous
