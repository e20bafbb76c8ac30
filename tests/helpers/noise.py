"""Float tolerances measured from the computation's own noise, never picked by hand.

Two float32 runs of one computation (other batch shapes, padding, another process, another BLAS path)
drift apart by rounding alone. How far is measured by running the same computation in float32 and in
float64: the tolerance of a comparison between two float32 runs is a small multiple of that gap, so it
follows the model and the library versions instead of breaking when a release reorders a sum.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import attn_plugins as ap

# Each side of a comparison carries up to the float32-vs-float64 gap, in either direction: 2 would do for
# the worst case of two independent runs; 4 leaves room for a gap measured on a lucky input.
FACTOR = 4.0
# The floor: float32's resolution at values of order one, for computations whose measured gap is zero.
FLOOR = float(np.finfo(np.float32).eps)


def _gap(a: Sequence[Any], b: Sequence[Any]) -> float:
    return max((float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)))) for x, y in zip(a, b)), default=0.0)


def explain_tolerance(model: Any, tokenizer: Any, texts: Sequence[str], **explain: Any) -> float:
    """The tolerance for two float32 ``ap.explain`` runs of ``texts``: FACTOR × their float32-vs-float64 gap."""
    single = ap.explain(model, tokenizer, list(texts), **explain)
    double = ap.explain(copy.deepcopy(model).double(), tokenizer, list(texts), **explain)
    return max(FACTOR * _gap(single.values, double.values), FLOOR)


def capture_tolerance(model: Any, tokenizer: Any, texts: Sequence[str], kind: str = "self") -> float:
    """The tolerance for two float32 captures of ``texts``: FACTOR × the float32-vs-float64 gap of the weights."""
    single = ap.capture(model, tokenizer, list(texts))
    double = ap.capture(copy.deepcopy(model).double(), tokenizer, list(texts), dtype=torch.float64)
    return max(FACTOR * _gap([r.attentions[kind] for r in single], [r.attentions[kind] for r in double]), FLOOR)
