"""The metric contract: one call shape per kind of metric, one number out.

A metric component (built-in or from a plugin) is a :class:`Metric`: a name, a ``kind``, whether higher
is better, and a call that returns a float. The three kinds and their call shapes:

* ``"faithfulness"`` - ``metric(predict, token_ids, scores, target, *, baseline_id, protected=None, **options)``:
  erase tokens by ``scores`` and watch ``predict`` (token ids ``[batch, tokens]`` -> class probabilities)
  for class ``target``; ``baseline_id`` replaces erased tokens;
* ``"plausibility"`` - ``metric(scores, rationale, *, protected=None, **options)``: agreement of the scores
  with a human (or planted) rationale mask;
* ``"agreement"`` - ``metric(scores, reference, *, protected=None, **options)``: rank agreement of two
  score vectors, e.g. an attention method and shap.

``protected`` marks tokens (special tokens) that are never erased or ranked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

KINDS = ("faithfulness", "plausibility", "agreement")


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``metric(...)`` calls ``function`` with its kind's call shape and returns a float."""

    name: str
    kind: str
    function: Callable[..., Any]
    higher_is_better: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"metric {self.name!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> float:
        """The metric's value (a result object's ``value`` when the function returns one)."""
        result = self.function(*args, **kwargs)
        return float(getattr(result, "value", result))
