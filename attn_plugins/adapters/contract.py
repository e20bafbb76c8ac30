"""The adapter contract: what an adapter receives (options, an encoded batch) and what it implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError, UnsupportedModelError
from ..record import AttentionRecord


@dataclass
class CaptureOptions:
    """What to capture besides the attention weights, and in which form."""

    layers: list[int] | None = None  # original layer indices to keep (None: all)
    heads: list[int] | None = None  # original head indices to keep (None: all)
    dtype: torch.dtype = torch.float32  # storage dtype of the captured tensors
    values: bool = False  # per-head value vectors [L, H, K, d_head]
    value_norms: bool = False  # per-head ‖f(x_j)‖ through value and output projections [L, H, K]
    qk: bool = False  # per-head query and key vectors (bertviz neuron view)
    gradients: bool = False  # d(target)/d(attention probabilities)
    # Scalar target for gradients: a class index, or a callable(model_output) -> scalar tensor.
    target: int | Callable[[Any], torch.Tensor] | None = None
    kinds: list[str] | None = None  # attention kinds to capture (None: all)
    # Keep the backend's output (an output bit-identical to an uncaptured run) and compute the probabilities
    # beside it, instead of computing the output from the captured probabilities (one computation per layer).
    keep_backend: bool = False
    # Listening only: the adapter may hand a layer over in query blocks of at most this many bytes of
    # float32 weights (None: whole layers), so a streaming consumer never holds more than one block.
    block_bytes: int | None = None
    # A relevance rule applied inside the attention computation (a key of ATTENTION_RULES; None: none).
    # It changes the backward pass only; adapters that apply rules list them in Adapter.attention_rules().
    attention_rule: str | None = None
    # Listening only: ``value_edit(kind, layer, module, value) -> value`` replaces each attention call's value
    # vectors ``[batch, kv_heads, keys, head_dim]`` before the attention uses them (value zeroing zeroes
    # some). Adapters that cannot apply it never call it; the caller checks that it was called.
    value_edit: Callable[[str, int, Any, torch.Tensor], torch.Tensor] | None = None


# Relevance rules for the attention computation softmax(Q·Kᵀ·s + mask)·V, as used by LRP methods that
# read relevance as input × modified gradient. Forward values are unchanged in every case.
ATTENTION_RULES = {
    # AttnLRP (Achtibat et al. 2024): the uniform rule on the two bilinear products. Each operand of Q·Kᵀ
    # and of A·V receives half the product's relevance: the gradient into each product is halved. The
    # softmax keeps its plain gradient, which is AttnLRP's softmax rule (Prop. 3.1) in this formulation.
    "uniform": "AttnLRP: gradients into Q·Kᵀ and into A·V halved (q, k get 1/4, v gets 1/2)",
    # CP-LRP (Ali et al. 2022): attention probabilities are held constant, relevance flows through V only.
    "detached": "CP-LRP: attention probabilities detached (no relevance through Q and K)",
}


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by a constant."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged in the forward pass; its gradient multiplied by ``factor`` in the backward pass."""
    return _ScaleGradient.apply(x, factor)


def rule_operands(rule: str | None, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key as the attention ``rule`` wants them before the scores Q·Kᵀ are formed."""
    if rule == "uniform":  # halving the gradient of both operands is halving the gradient into Q·Kᵀ
        return scale_gradient(query, 0.5), scale_gradient(key, 0.5)
    return query, key


class _IdentityRule(torch.autograd.Function):
    """y = f(x) unchanged; backward g(x) = g(y)·y/(x + 1e-10), so x·g(x) = y·g(y) (LRP's identity rule)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y / (x + 1e-10))
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


def rule_softcap(rule: str | None, scores: torch.Tensor, softcap: float) -> torch.Tensor:
    """``tanh(scores / softcap) · softcap`` (Gemma-2); under an attention ``rule`` with the identity rule's backward."""
    capped = torch.tanh(scores / softcap) * softcap
    return _IdentityRule.apply(scores, capped.detach()) if rule else capped


def rule_output(rule: str | None, weights: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``weights @ value`` with the attention ``rule`` applied to the product (``None``: plain)."""
    if rule == "detached":
        return torch.matmul(weights.detach(), value)
    out = torch.matmul(weights, value)
    return scale_gradient(out, 0.5) if rule == "uniform" else out


@dataclass
class TokenInfo:
    """Token-level facts of one side (source or target) of one example, padding already removed."""

    tokens: list[str]
    word_ids: list[int | None] | None = None
    offsets: list[tuple[int, int]] | None = None
    special_tokens_mask: list[bool] | None = None
    text: str | None = None
    truncated: bool = False


@dataclass
class EncodedBatch:
    """Model inputs for a batch plus per-example token facts.

    ``inputs`` are the keyword arguments of the model's forward (``args`` its positional ones). ``source_mask`` and ``target_mask``
    ([batch, seq], 1 for real tokens) tell which positions are padding; they are kept apart from the
    ids because a pad id can be a real token (Marian starts decoding with its pad id).
    """

    inputs: dict[str, torch.Tensor]
    source: list[TokenInfo]
    source_mask: torch.Tensor
    target: list[TokenInfo] | None = None
    target_mask: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Positional arguments of the model's forward, before ``inputs`` (a plain PyTorch module called as
    # ``model(src)``); tokens are then named by position once the attention shows how many there are.
    args: tuple[Any, ...] = ()

    @property
    def size(self) -> int:
        """Number of examples (0 when only the model's attention will tell, e.g. a raw tensor input)."""
        return len(self.source)


@dataclass
class AttentionCall:
    """One attention computation seen while listening: its kind, original layer number and weights.

    ``probs`` is ``[batch, heads, rows, keys]`` with every head: the whole layer, or (when the listener
    set ``CaptureOptions.block_bytes``) the query rows ``row0 .. row0 + rows`` of a layer of
    ``num_queries`` rows, blocks arriving in order. ``causal`` tells whether queries may only see keys at
    or before their own position; ``num_layers`` is the number of layers of this kind in the model (None:
    unknown to the adapter); ``sink_mass`` ``[batch, heads, rows]`` is the share of each row that learned
    attention sinks took (None: the model has none, rows sum to 1).
    """

    kind: str
    layer: int
    probs: torch.Tensor
    causal: bool
    row0: int = 0
    num_queries: int | None = None
    num_layers: int | None = None
    sink_mass: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        """Query rows of the whole layer (all of them arrive in one call unless handed over in blocks)."""
        return self.num_queries if self.num_queries is not None else int(self.probs.shape[2])

    @property
    def ends_layer(self) -> bool:
        """Whether this call holds the last query rows of its layer."""
        return self.row0 + int(self.probs.shape[2]) >= self.rows


class Adapter(ABC):
    """Base class of capture adapters: the contract every adapter follows.

    An adapter knows one family of models. It declares which models it reads (:meth:`supports`, with
    ``priority`` breaking ties: the highest-priority adapter that supports a model is used) and turns an
    :class:`EncodedBatch` into one :class:`~attn_plugins.record.AttentionRecord` per example
    (:meth:`capture`), honouring every field of :class:`CaptureOptions` it can and refusing the others
    with :class:`~attn_plugins.errors.MissingCaptureError`. Records use the original layer and head
    numbers, hold no padding, and carry weights on the CPU in ``options.dtype``;
    :func:`~attn_plugins.adapters.split_batch` does the cutting.

    An adapter that can also hand over attention while the model runs implements :meth:`listen`; then
    generation (:func:`~attn_plugins.capture.capture_generate`) and streaming reducers
    (:func:`attn_plugins.capture.stream`) work for its models too, with no further code.

    Three optional parts make captures cheaper; an adapter without them still works, the core then
    filters and checks after the forward:

    * :meth:`attention_layout` - the layers and heads per kind (learned once, possibly from a forward
      that computes nothing), so a bad ``layers=``/``heads=``/``kinds=`` fails before the capture runs;
    * honouring ``options.layers`` and ``options.kinds`` (and ``heads`` in :meth:`capture`) before the
      forward: layers that are not selected run the model's own attention with nothing computed or kept;
    * in :meth:`listen`, handing a layer over in query blocks when ``options.block_bytes`` is set
      (:class:`AttentionCall` ``row0`` / ``num_queries``).

    Models are shared: an adapter that switches a model's state (configs, hooks) must leave other threads'
    forwards and captures of the same model unaffected and restore the model when its last capture ends;
    :mod:`attn_plugins.adapters.routing` gives per-thread routing and reference-counted installation.
    """

    name: str = "adapter"
    priority: int = 0

    @abstractmethod
    def supports(self, model: Any) -> bool:
        """Whether this adapter can capture attention from ``model``."""

    @abstractmethod
    def capture(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> list[AttentionRecord]:
        """Run ``model`` on ``batch`` and return one record per example."""

    def listen(
        self, model: Any, options: CaptureOptions, on_call: Callable[[AttentionCall], None]
    ) -> AbstractContextManager[None]:
        """A context in which every forward of ``model`` hands each selected layer's attention to ``on_call``.

        Calls of one kind arrive in layer order within a forward, each layer's blocks in row order.
        ``options.layers`` (original numbers, negatives from the end) and ``options.kinds`` say which
        layers the listener reads: an adapter may skip the others (the listener ignores them if it does
        not); with ``options.block_bytes`` it may deliver query blocks instead of whole layers. The default
        refuses: an adapter that cannot listen still captures whole records.
        """
        raise UnsupportedModelError(
            f"adapter {self.name!r} cannot hand over attention while the model runs (no listen()); "
            "generation and streaming need an adapter that can"
        )

    def attention_rules(self, model: Any) -> tuple[str, ...]:
        """The :data:`ATTENTION_RULES` this adapter applies inside ``model``'s attention (default: none)."""
        return ()

    def attention_layout(self, model: Any, inputs: dict[str, Any] | None = None) -> dict[str, tuple[int, int]] | None:
        """``{kind: (layers, heads)}`` this adapter captures from ``model`` (None: not known before a capture).

        With ``inputs`` (keyword arguments of one forward) an adapter may run the model once to learn it,
        computing nothing extra. The core checks ``layers=``, ``heads=`` and ``kinds=`` against it
        (:func:`attn_plugins.adapters.check_selection`) before the capture runs.
        """
        return None

    def call(self, model: Any, inputs: dict[str, torch.Tensor], args: tuple[Any, ...] = ()) -> Any:
        """Run one forward of ``model`` on encoded inputs: positional ``args``, then keyword ``inputs``."""
        return model(*args, **inputs)

    def describe(self, model: Any) -> dict[str, Any]:
        """Record metadata about ``model`` under this adapter (model type, backend, exactness)."""
        config = getattr(model, "config", None)
        return {
            "model_type": getattr(config, "model_type", None) or type(model).__name__,
            "model_class": type(model).__name__,
            "adapter": self.name,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def target_scalar(model_output: Any, target: int | Callable[[Any], torch.Tensor] | None) -> torch.Tensor:
    """The scalar whose gradient with respect to the attention is captured.

    ``target`` is a class index (the logit of that class, summed over the batch), a callable
    ``target(model_output) -> scalar``, or None for the predicted class of a classifier.
    """
    if callable(target):
        value = target(model_output)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError("a gradient target callable must return a scalar tensor")
        return value.reshape(())
    logits = getattr(model_output, "logits", None)
    if logits is None:
        raise ValueError("the model output has no logits: pass gradient_target=callable(output) -> scalar tensor")
    if logits.dim() == 3:  # language models and token classifiers: the last position's logits
        logits = logits[:, -1]
    if target is None:
        index = logits.argmax(-1, keepdim=True)
    else:
        if not 0 <= int(target) < logits.shape[-1]:
            raise ValueError(f"class index {target} out of range for {logits.shape[-1]} outputs")
        index = torch.full((logits.shape[0], 1), int(target), dtype=torch.long)
    return logits.gather(-1, index).sum()


class RowOutput:
    """One example's view of a batched model output: every tensor cut to row ``b`` (a batch of one), and the
    sequence axis of ``[batch, tokens, ...]`` tensors cut to the example's ``length`` (right padding)."""

    def __init__(self, output: Any, b: int, length: int, width: int):
        self._output, self._b, self._length, self._width = output, b, length, width

    def _cut(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            value = value[self._b : self._b + 1]
            # Hidden states and per-token logits [1, T, ...]: a target pooling every row sees the text's rows only.
            return value[:, : self._length] if value.dim() >= 3 and value.shape[1] == self._width else value
        if isinstance(value, tuple):
            return tuple(self._cut(v) for v in value)
        return value

    def __getattr__(self, name: str) -> Any:
        return self._cut(getattr(self._output, name))

    def __getitem__(self, key: Any) -> Any:
        return self._cut(self._output[key])


class BatchTarget:
    """The gradient target of a padded batch: Σ_b target_b(row b of the output).

    Examples in a batch do not interact, so the gradient of the sum gives each example the gradient of its
    own target. ``targets`` are one-example callables (they read row 0 of the output); ``lengths`` are the
    examples' token counts (right padding), so a target that pools every row reads its text's rows only.
    ``relevance`` sums the targets' conservative forms (``target.relevance``, where they have one).
    ``values`` holds each example's value after a call.
    """

    def __init__(self, targets: Sequence[Callable[[Any], torch.Tensor]], lengths: Sequence[int]):
        if len(targets) != len(lengths) or not targets:
            raise InputError("a batch target needs one target and one length per example")
        self.targets, self.lengths = list(targets), [int(n) for n in lengths]
        self.values: list[float] = []

    def _sum(self, output: Any, linear: bool) -> torch.Tensor:
        width = max(self.lengths)
        values = []
        for b, (target, n) in enumerate(zip(self.targets, self.lengths)):
            fn = getattr(target, "relevance", None) if linear else None
            view = RowOutput(output, b, n, width)
            values.append(fn(view).reshape(()) if callable(fn) else target_scalar(view, target))
        self.values = [float(v.detach()) for v in values]
        return torch.stack(values).sum()

    def __call__(self, output: Any) -> torch.Tensor:
        return self._sum(output, linear=False)

    def relevance(self, output: Any) -> torch.Tensor:
        """The sum of the targets' forms linear in the last hidden states (LRP starts its backward there)."""
        return self._sum(output, linear=True)
