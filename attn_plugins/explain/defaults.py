"""The defaults: the method an explanation uses when none is named, and the methods a report and a comparison run.

The default method is the most faithful built-in method that supports the model, from the faithfulness benchmark.

The ranking (``method_ranking.json``, written by ``scripts/write_method_ranking.py`` from
``benchmarks/results/faithful.json``; a test keeps them equal) orders the built-in methods by their mean
Spearman with exact Shapley values on the benchmark's headline split (MiniLM similarity, topic pairing, the
held-out test texts), each read as the explainer reads it by default (its ``pooled_rows``). :func:`choose`
walks it and takes the first method whose :meth:`~attn_plugins.methods.base.Method.check_support` accepts
the model (no forward is run) and which is defined on the explained attention kind. Every better method it
passes over is kept with the reason, so nothing falls back silently: the explanation, the corpus rows and
the report say which method was used and why each better one was not.

The module is light (the methods are imported when a choice is made): the command line's help reads it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, UnsupportedModelError

# The report's methods are the ones worth reading: the two that track exact Shapley values closely on the
# faithfulness benchmark (cplrp_mask, attnlrp: docs/faithfulness.md) and the best of the cheap attention
# baselines there (gae). Raw attention, rollout, norm, alti and grad_attention rank tokens far from the
# reference there, and flow costs a max-flow per token pair; they run when named (--methods).
REPORT_METHODS = ("cplrp_mask", "attnlrp", "gae")

# A comparison sets the faithful methods beside the attention-only ones it is usually asked about.
COMPARE_METHODS = ("cplrp_mask", "attnlrp", "raw", "rollout", "grad_attention", "gae")

# shap's budget per text for a report's reference when a text is too long for exact Shapley values. On the
# faithfulness benchmark (attn_plugins/explain/reference_accuracy.json) Partition at 100 evaluations agrees
# with exact values as well as at 500 (Spearman 0.93 both) for a fifth of the model calls; on a 118-token
# paragraph with MiniLM 500 evaluations took 17 s of CPU, 100 took 3 s.
REPORT_SHAP_EVALS = 100

RANKING_FILE = "method_ranking.json"
# The benchmark entries the ranking reads: MiniLM, topic pairing, held-out texts (README's headline column).
PAIRING, SPLIT = "topic", "test"
# Entry kinds in the benchmark JSON that are built-in methods (not shap, captum, occlusion or variants).
METHOD_KINDS = ("relevance", "attention rows")


def default_rows(method: Any) -> str:
    """How the explainer reads ``method``'s query rows for a mean-pooled target: ``"weighted"``, ``"mean"`` or ``"first"``."""
    from ..methods import get_method

    method = get_method(method) if isinstance(method, str) else method
    rows = getattr(method, "pooled_rows", "weighted")
    if rows not in ("weighted", "mean", "first"):
        raise InputError(
            f"method {getattr(method, 'name', method)!r}: pooled_rows must be weighted, mean or first, not {rows!r}"
        )
    return rows


def ranking_from_benchmark(result: dict[str, Any]) -> dict[str, Any]:
    """The ranking of the registered built-in methods computed from the faithfulness benchmark's JSON."""
    from ..methods import get_method
    from ..plugins import get_registry

    registry = get_registry()
    entries = result["minilm"]["pairings"][PAIRING]["splits"][SPLIT]
    rows = []
    for name in registry.names("method"):
        if not registry.is_builtin("method", name):
            continue
        method = get_method(name)
        # A relevance method has one entry; a row-reading method one per row choice: the explainer's default.
        key = name if method.explains_target else f"{name}[{default_rows(method)}]"
        entry = entries.get(key)
        if entry is None or entry.get("kind") not in METHOD_KINDS:
            continue
        rows.append({"method": name, "entry": key, "spearman": round(float(entry["spearman"]["mean"]), 4)})
    rows.sort(key=lambda r: (-r["spearman"], r["method"]))
    return {
        "source": (
            f"benchmarks/results/faithful.json ({result['date']}): mean Spearman with exact Shapley values, "
            f"{result['minilm']['model']}, {PAIRING} pairing, {SPLIT} texts"
        ),
        "ranking": rows,
    }


@functools.cache
def ranking() -> tuple[str, ...]:
    """Built-in method names, most faithful first (the packaged ranking)."""
    from importlib import resources

    data = json.loads(resources.files("attn_plugins.explain").joinpath(RANKING_FILE).read_text("utf-8"))
    return tuple(r["method"] for r in data["ranking"])


@dataclass
class Choice:
    """The method a default picked for a model, and each more faithful method it passed over with the reason."""

    method: str
    refused: list[tuple[str, str]] = field(default_factory=list)

    def note(self) -> str:
        """One sentence for metadata and reports: what was used, and why not the better ones."""
        why = "; ".join(f"{name}: refused ({reason})" for name, reason in self.refused)
        head = f"{self.method}: the most faithful method in the benchmark's ranking that supports this model"
        return head + (f"; more faithful methods could not run: {why}" if why else "")

    def to_dict(self) -> dict[str, Any]:
        """The choice as plain data (the explanation's ``method_choice``)."""
        return {"method": self.method, "refused": [{"method": m, "reason": r} for m, r in self.refused]}


def refusal(method: Any, model: Any, tokenizer: Any = None, kind: str | None = None) -> str | None:
    """Why ``method`` cannot explain ``model`` (for the attention ``kind`` a target reads), or None when it can."""
    kinds = tuple(getattr(method, "kinds", ()))
    if kind is not None and kinds and kind not in kinds:
        return f"it is defined on {', '.join(kinds)} attention; this target reads {kind} attention"
    check = getattr(method, "check_support", None)
    if check is None:
        return None
    try:
        check(model, tokenizer)
    except (UnsupportedModelError, InputError) as err:
        return str(err)
    return None


def choose(model: Any, tokenizer: Any = None, kind: str | None = None) -> Choice:
    """The first method of :func:`ranking` that supports ``model`` (and ``kind``), with the refusals before it."""
    from ..methods import get_method

    refused: list[tuple[str, str]] = []
    for name in ranking():
        reason = refusal(get_method(name), model, tokenizer, kind)
        if reason is None:
            return Choice(name, refused)
        refused.append((name, reason))
    why = "; ".join(f"{m}: {r}" for m, r in refused)
    raise UnsupportedModelError(f"no ranked method supports {type(model).__name__}: {why}")
