"""ap.compare: attention methods against Shapley values of the same target function.

For every text, a faithful reference explains the target (the predicted or given class's logit, a
token's class logit, or the cosine similarity to a reference sentence), and each method's scores are
compared with it over the non-special tokens: Spearman's rho, Kendall's tau and top-k overlap, with the
cost of each (wall time, forward passes). The reference is one of

* ``"shap"``: shap's ``Partition`` explainer with a ``Text`` masker at ``max_evals`` evaluations (an
  estimate of Owen values over shap's token hierarchy);
* ``"exact"``: exact Shapley values, every coalition of the maskable tokens evaluated with the same
  ``Text`` masker (2^p evaluations; texts with more than ``exact_max`` maskable tokens fall back to
  ``"shap"`` with a warning naming the text);
* ``"auto"``: exact values when the text is short enough, else shap's Partition explainer; each text's
  detail says which was used and why;
* ``"sampled"``: exact values when the text is short enough, else sampled Shapley values at ``max_evals``
  evaluations: a balanced design fitted with one intercept per coalition size
  (:func:`attn_plugins.explain.estimators.stratified_estimate`; the closest to exact values of the
  estimators in ``attn-plugins bench sampling``, shap's Permutation and Partition explainers included, at
  every budget); below the maskable tokens + 1 evaluations, paired KernelSHAP regression pulled toward
  ``cplrp_mask``'s scores (:func:`~attn_plugins.explain.estimators.regression_estimate`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shap

from ..capture.oom import split_scope
from ..errors import InputError
from ..methods.base import Method
from ..metrics.agreement import kendall, spearman, top_k_overlap
from ..results import Result, plain
from .defaults import COMPARE_METHODS
from .explainer import AttentionExplainer, as_batch
from .maskers import exact_shapley, maskable_positions
from .targets import Target, describe_example

# The faithful methods first, then the attention-only ones a comparison is usually asked about.
DEFAULT_METHODS = COMPARE_METHODS
REFERENCES = ("shap", "exact", "auto", "sampled")
# The cheap method whose scores the "sampled" reference's regression is pulled toward (one forward + backward).
PRIOR_METHOD = "cplrp_mask"
# Exact values over 10 maskable tokens take 2^10 = 1024 evaluations, about twice shap's default budget.
EXACT_MAX = 10
# How the "sampled" reference's note names its fallback (the report quotes that estimator's error then).
SAMPLED_FALLBACK = "fewer than the tokens + 1 the balanced design needs"


def agreement(scores: np.ndarray, reference: np.ndarray, k: int) -> dict[str, float]:
    """Spearman, Kendall tau and top-k overlap of two score vectors (NaN correlations when either is constant).

    The statistics are the metric plugins' own; a constant ranking gives NaN here instead of an error so
    one flat method does not stop a comparison of several.
    """
    scores, reference = np.asarray(scores, float), np.asarray(reference, float)
    if len(scores) < 2 or np.ptp(scores) == 0 or np.ptp(reference) == 0:
        rho = tau = float("nan")
    else:
        rho, tau = spearman(scores, reference), kendall(scores, reference)
    return {"spearman": rho, "kendall": tau, "top_k": top_k_overlap(scores, reference, min(k, len(scores)))}


class CountingFunction:
    """A model function that counts its calls (forward passes) and evaluated inputs."""

    def __init__(self, fn: Any):
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.rows += len(texts)
        return self.fn(texts)


@dataclass
class CompareResult(Result):
    """Per-method agreement with the reference and cost: ``str()`` for people, ``to_dict()``/``to_json()`` for tools."""

    reference: str
    task: str
    target: str | None
    texts: list[str]
    top_k: int
    max_evals: int
    methods: list[dict[str, Any]] = field(default_factory=list)
    reference_cost: dict[str, float] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reference_used(self) -> str:
        """What the methods were compared with: exact values, shap's estimate, or each for some texts."""
        used = [d.get("reference", "shap") for d in self.details]
        names = {u: reference_name(u, self.max_evals) for u in used}
        if len(names) == 1:
            return next(iter(names.values()))
        return " / ".join(f"{name} ({used.count(u)} texts)" for u, name in names.items())

    def to_dict(self) -> dict[str, Any]:
        """Plain data (NaN as None) for JSON."""
        return plain(
            {
                "reference": self.reference,
                "reference_used": self.reference_used,
                "task": self.task,
                "target": self.target,
                "n_texts": len(self.texts),
                "top_k": self.top_k,
                "max_evals": self.max_evals,
                "reference_cost": self.reference_cost,
                "methods": self.methods,
                "details": self.details,
            }
        )

    def rows(self) -> list[dict[str, Any]]:
        """One row per method (agreement, time and forward passes per text), the reference's cost last."""
        out = []
        for row in self.methods:
            out.append(
                {
                    "method": row["method"],
                    "spearman": row.get("spearman"),
                    "kendall": row.get("kendall"),
                    f"top-{self.top_k}": row.get("top_k"),
                    "s/text": row.get("seconds_per_text"),
                    "passes/text": row.get("forward_passes_per_text"),
                    "error": f"error: {row['error']}" if row.get("error") else "",
                }
            )
        cost = self.reference_cost
        out.append(
            {
                "method": self.reference_used,
                "spearman": None,
                "kendall": None,
                f"top-{self.top_k}": None,
                "s/text": cost.get("seconds_per_text"),
                "passes/text": cost.get("forward_passes_per_text"),
                "error": "",
            }
        )
        return out

    def __str__(self) -> str:
        title = (
            f"agreement with {self.reference_used} ({self.task}{', ' + self.target if self.target else ''}; "
            f"{len(self.texts)} texts, {self.reference_cost.get('evaluations_per_text', 0):.0f} masked inputs/text)"
        )
        notes = [d["reference_note"] for d in self.details if d.get("reference_note")]
        return title + "\n" + super().__str__() + "".join("\nnote: " + n for n in notes)


def _special_mask(explainer: AttentionExplainer, spec: Target, n: int) -> np.ndarray:
    """True at special tokens, which shap's Text masker never masks (their shap values are 0)."""
    ids = explainer.tokenizer(spec.text)["input_ids"]
    mask = explainer.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
    if len(mask) != n:
        raise InputError("the tokenizer's special-token mask does not match the explained tokens")
    return np.asarray(mask, dtype=bool)


def _check_rankable(explainer: AttentionExplainer, spec: Target, name: str) -> None:
    """A text needs two tokens besides the special ones to rank methods on; else an InputError naming it."""
    if spec.fn is None:
        return  # the task check below names the problem
    ids = explainer.tokenizer(spec.text)["input_ids"]
    special = explainer.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
    words = [t for t, s in zip(explainer.tokenizer.convert_ids_to_tokens(ids), special) if not s]
    if len(words) < 2:
        held = f"one token besides the special ones ({words[0]!r})" if words else "only special tokens"
        raise InputError(
            f"{name} has {held}: ranking methods against Shapley values needs at least two tokens (give a "
            "longer text; a report without the reference takes --shap-evals 0)"
        )


def reference_name(used: str, max_evals: int) -> str:
    """How a reference is named in results and reports."""
    if used == "sampled":
        return f"sampled Shapley values ({max_evals} evaluations)"
    return "exact Shapley values" if used == "exact" else f"shap Partition ({max_evals} evaluations)"


def reference_values(
    fn: Any,
    tokenizer: Any,
    text: str,
    reference: str,
    max_evals: int,
    exact_max: int = EXACT_MAX,
    prior: Callable[[], tuple[np.ndarray | None, str | None]] | None = None,
) -> tuple[np.ndarray, list[str], str, str | None]:
    """(values over the tokens, token strings, ``"exact"``, ``"shap"`` or ``"sampled"``, a note when exact values were not affordable).

    All mask with shap's ``Text`` masker, so the values explain the same function of the same inputs.
    ``prior``: for ``"sampled"`` with fewer evaluations than the maskable tokens + 1 (too few for the
    stratified design to tell every token apart), returns the cheap method's scores over the tokens (None
    when it could not run) and why not.
    """
    masker = shap.maskers.Text(tokenizer)
    players, _ = maskable_positions(masker, text)
    segments, _ = masker.token_segments(text)
    tokens = [str(t) for t in segments]
    if reference != "shap" and 0 < len(players) <= exact_max:
        return exact_shapley(fn, masker, text), tokens, "exact", None
    note = None
    if reference != "shap":
        note = (
            f"{text[:40]!r}{'...' if len(text) > 40 else ''} has {len(players)} maskable tokens: exact Shapley values "
            f"would take 2^{len(players)} = {2 ** len(players)} evaluations (the limit is {exact_max} tokens, "
            f"{2**exact_max}); the reference is "
        )
    if reference == "sampled":
        from .estimators import estimate_shapley

        if max_evals >= len(players) + 1:  # enough for the design to identify every token's value
            values, _ = estimate_shapley(fn, masker, text, None, max_evals, seed=0, sampling="stratified")
            note += (
                f"sampled Shapley values (a balanced design with one intercept per coalition size, at {max_evals} "
                "evaluations) instead"
            )
            return values, tokens, "sampled", note
        scores, why = prior() if prior is not None else (None, f"no {PRIOR_METHOD} scores were given")
        if scores is not None and len(scores) != len(tokens):
            scores, why = None, f"{PRIOR_METHOD} scored {len(scores)} tokens, the masker cut {len(tokens)}"
        values, _ = estimate_shapley(fn, masker, text, scores, max_evals, seed=0)
        prior_text = f"pulled toward {PRIOR_METHOD}'s scores" if scores is not None else f"without a prior ({why})"
        note += (
            f"sampled Shapley values (KernelSHAP regression at {max_evals} evaluations, {SAMPLED_FALLBACK}, "
            f"{prior_text}) instead"
        )
        return values, tokens, "sampled", note
    if note is not None:
        note += f"shap's Partition explainer at {max_evals} evaluations instead"
    expl = shap.Explainer(fn, masker, algorithm="partition")([text], max_evals=max_evals, silent=True)
    return np.asarray(expl.values[0], float), [str(t) for t in expl.data[0]], "shap", note


def _warm_up(explainer: AttentionExplainer, text: str) -> None:
    """Pay one-time costs (shap's compiled helpers, lazy imports, adapter setup) before anything is timed."""
    from ..capture import capture

    masker = shap.maskers.Text(explainer.tokenizer)
    # a constant function: shap compiles its helpers without a single model forward
    shap.Explainer(lambda x: np.zeros(len(x)), masker, algorithm="partition")([text], max_evals=10, silent=True)
    capture(explainer.model, explainer.tokenizer, text)


def compare(
    model: Any,
    tokenizer: Any,
    texts: str | Sequence[str],
    methods: Sequence[str | Method] | None = None,
    reference: str = "shap",
    target: int | str | None = None,
    max_evals: int | None = None,
    top_k: int | None = None,
    *,
    task: str | None = None,
    token: int | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    exact_max: int = EXACT_MAX,
    truncation: bool = False,
    max_length: int | None = None,
) -> CompareResult:
    """Compare attention ``methods`` with a faithful ``reference`` (see the module docstring) on the same target.

    ``target`` is a class index, a reference sentence (similarity of sentence embeddings), or None for
    the predicted class. ``max_evals`` is shap's budget per text (default 500), ``top_k`` the overlap
    size (default 3), ``exact_max`` the most maskable tokens exact values are computed for. A text longer
    than the model accepts is an InputError naming it, unless ``truncation=True``: then the reference and
    every method explain its longest prefix that fits.
    """
    if reference not in REFERENCES:
        raise InputError(
            f"reference must be one of {', '.join(map(repr, REFERENCES))} (shap's Partition explainer, exact "
            f"Shapley values, exact when short enough else Partition, or exact when short enough else sampled), "
            f"not {reference!r}"
        )
    if not isinstance(exact_max, int) or not 1 <= exact_max <= 14:
        raise InputError(f"exact_max must be an integer from 1 to 14 (2^14 evaluations), got {exact_max!r}")
    examples = as_batch(texts)
    if not all(isinstance(t, str) for t in examples):
        raise InputError("compare explains plain texts (shap's Text masker cannot mask QA pairs)")
    chosen = list(methods) if methods is not None else list(DEFAULT_METHODS)
    if not chosen:
        raise InputError("methods: the list is empty")
    # Registered names or Method objects (a third-party method not installed as a plugin works too).
    names = [m if isinstance(m, str) else getattr(m, "name", type(m).__name__) for m in chosen]
    if len(set(names)) != len(names):
        raise InputError(f"methods: duplicate names in {names}")
    max_evals = 500 if max_evals is None else int(max_evals)
    if max_evals < 2:
        raise InputError(f"max_evals must be at least 2, got {max_evals}")
    k = 3 if top_k is None else int(top_k)
    if k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k}")
    sentence = target if isinstance(target, str) else None
    common = {
        "task": task,
        "token": token,
        "reference": sentence,
        "target": None if sentence else target,
        "truncation": truncation,
        "max_length": max_length,
    }
    options = method_options or {}
    explainers = {
        name: AttentionExplainer(model, tokenizer, method=m, **common, **options.get(name, {}))
        for name, m in zip(names, chosen)
    }
    probe = next(iter(explainers.values()))
    # Every text is resolved (and its length checked) before anything slow runs.
    specs = probe.resolve_all(examples)

    for i, (text, spec) in enumerate(zip(examples, specs)):
        _check_rankable(probe, spec, describe_example(text, i + 1 if len(examples) > 1 else None))
    _warm_up(probe, specs[0].text)
    ref_seconds, ref_calls, ref_rows = 0.0, 0, 0
    per_method: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    cost: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    details: list[dict[str, Any]] = []
    refs: list[np.ndarray] = []
    keeps: list[np.ndarray] = []
    task_name = None
    for text, spec in zip(examples, specs):
        task_name = spec.task
        if spec.fn is None:
            raise InputError(
                f"compare cannot run shap on the {spec.task!r} task; it supports classification, "
                "token classification and similarity"
            )
        fn = CountingFunction(spec.fn)
        start = time.perf_counter()

        def prior(spec: Target = spec) -> tuple[np.ndarray | None, str | None]:
            cheap = AttentionExplainer(model, tokenizer, method=PRIOR_METHOD, **common)
            try:
                scores, _ = cheap.scores(spec)
            except Exception as exc:  # a model the relevance rules do not cover: sample without a prior
                return None, f"{PRIOR_METHOD} failed: {type(exc).__name__}: {exc}"
            scores = np.asarray(scores, float)
            return (scores if scores.ndim == 1 else None), (None if scores.ndim == 1 else "several outputs")

        # spec.text is the text itself, or with truncation its prefix the model reads
        ref_values, tokens, used, note = reference_values(
            fn, probe.tokenizer, spec.text, reference, max_evals, exact_max, prior
        )
        if note and reference == "exact":
            warnings.warn(note, UserWarning, stacklevel=2)
        ref_seconds += time.perf_counter() - start
        ref_calls, ref_rows = ref_calls + fn.calls, ref_rows + fn.rows
        keeps.append(~_special_mask(probe, spec, len(ref_values)))
        refs.append(ref_values)
        details.append(
            {
                "text": text,
                "truncated": bool(spec.meta.get("truncated", False)),
                "tokens": tokens,
                "shap": ref_values.tolist(),  # the reference's values (Shapley values: exact, or shap's estimate)
                "reference": used,
                "reference_note": note,
                "evaluations": fn.rows,
                "methods": {},
            }
        )
    # Batches split for lack of device memory, over every method: one warning for the comparison.
    with split_scope():
        for name, explainer in explainers.items():
            # All texts at once: the explainer captures them in padded batches, as ap.explain does.
            passes = explainer.forward_passes
            start = time.perf_counter()
            try:
                results = explainer.scores_batch(specs)
            except Exception as exc:  # one method's missing capture must not hide the others' results
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            cost[name].append((time.perf_counter() - start) / len(specs))
            each = (explainer.forward_passes - passes) / len(specs)
            for (scores, _), ref_values, keep, detail in zip(results, refs, keeps, details):
                per_method[name].append({**agreement(scores[keep], ref_values[keep], k), "passes": each})
                detail["methods"][name] = np.asarray(scores, float).tolist()

    n = len(examples)
    rows = []
    for name in names:
        if name in errors:
            rows.append({"method": name, "error": errors[name]})
            continue
        stats = per_method[name]

        def mean(key: str, stats: list[dict[str, float]] = stats) -> float:
            vals = np.array([s[key] for s in stats], float)
            return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

        rows.append(
            {
                "method": name,
                "spearman": mean("spearman"),
                "kendall": mean("kendall"),
                "top_k": mean("top_k"),
                "seconds_per_text": float(np.mean(cost[name])),
                "forward_passes_per_text": mean("passes"),
                "per_text": stats,
            }
        )
    return CompareResult(
        reference=reference,
        task=task_name or "",
        target=(f"similarity to {sentence!r}" if sentence else None if target is None else f"class {target}"),
        texts=examples,
        top_k=k,
        max_evals=max_evals,
        methods=rows,
        reference_cost={
            "seconds_per_text": ref_seconds / n,
            "forward_passes_per_text": ref_calls / n,
            "evaluations_per_text": ref_rows / n,
        },
        details=details,
    )
