"""What an adapter receives and implements: capture options, an encoded batch, the Adapter base class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import InputError
from .record import AttentionRecord


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

    ``inputs`` are the keyword arguments of the model's forward. ``source_mask`` and ``target_mask``
    ([batch, seq], 1 for real tokens) tell which positions are padding; they are kept apart from the
    ids because a pad id can be a real token (Marian starts decoding with its pad id).
    """

    inputs: dict[str, torch.Tensor]
    source: list[TokenInfo]
    source_mask: torch.Tensor
    target: list[TokenInfo] | None = None
    target_mask: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of examples."""
        return len(self.source)


class Adapter(ABC):
    """Base class of capture adapters; subclasses set ``name`` and implement both methods."""

    name: str = "adapter"
    priority: int = 0

    @abstractmethod
    def supports(self, model: Any) -> bool:
        """Whether this adapter can capture attention from ``model``."""

    @abstractmethod
    def capture(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> list[AttentionRecord]:
        """Run ``model`` on ``batch`` and return one record per example."""


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


def choose(indices: Sequence[int] | None, n: int, what: str) -> list[int]:
    """Positions of the selected layers or heads among ``n``: all when None, negatives counted from the end.

    Every adapter selects through this one function, so an index out of range is the same clear
    :class:`InputError` everywhere and records always store non-negative, original numbers.
    """
    if indices is None:
        return list(range(n))
    chosen = []
    for i in indices:
        if isinstance(i, bool) or not -n <= int(i) < n:
            raise InputError(f"{what} {i} out of range: the model has {n} {what}s")
        chosen.append(int(i) % n)
    if not chosen:
        raise InputError(f"the {what} selection is empty")
    return chosen
