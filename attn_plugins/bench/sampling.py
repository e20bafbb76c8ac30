"""Sampling Shapley estimators against exact values per budget: the control variate, plain sampling, shap.

On the faithfulness benchmark's MiniLM similarity task (120 texts, both pairings; the exact values and every
model evaluation looked up from ``benchmarks/results/faithful_exact.npz``, so no estimator runs the model),
each estimator is scored by Spearman against the exact Shapley values over the maskable tokens, at budgets
of model evaluations, averaged over seeds per text, then over texts (bootstrap 95 % interval):

* ``stratified design (no prior)``: :func:`attn_plugins.explain.estimators.stratified_estimate`, a balanced
  cyclic design in the middle coalition sizes and its complements, then Shapley-kernel pairs, fitted with one
  intercept per coalition size (no cheap method: its forward-equivalents are its evaluations alone);
* ``regression (cplrp_mask prior)``: :func:`attn_plugins.explain.estimators.regression_estimate`, paired
  KernelSHAP regression pulled toward ``cplrp_mask``'s scores (one forward and one backward, 3
  forward-equivalents); ``regression (no prior)``: the same with the even split as its prior;
* ``cv coalition (cplrp_mask)``: :func:`~attn_plugins.explain.estimators.coalition_estimate` (unbiased) with
  ``cplrp_mask``'s scores as the control variate;
* ``coalition (no control variate)``: the same sampling with ``c = 0``;
* ``permutation (antithetic)``: :func:`~attn_plugins.explain.estimators.permutation_estimate`;
* ``shap Permutation``: shap's Permutation explainer at the same ``max_evals`` (it refuses budgets below
  2p + 1: those texts are left out of its row, and ``texts`` says how many it explained); ``shap Partition``
  (the report's reference for texts too long for exact values) at the same budgets, once per text;
* ``cplrp_mask`` alone, for the floor the control variate starts from.

A ranking that is constant (an estimator with too small a budget to sample anything) scores Spearman 0.
Forward-equivalents: the model evaluations made (distinct coalitions), plus 3 for ``cplrp_mask``. Budget 7
is there so that the estimators with ``cplrp_mask``'s prior have a column at 10 forward-equivalents.

The ``generation`` part scores the same estimators (shap's left out: its explainers take strings, these
models token ids) on the trained decoder and encoder-decoder of the faithful benchmark's generation part
(:mod:`attn_plugins.bench.generation`: each explained generated token has exact Shapley values of its
log-probability), at the same budgets; a text's explained tokens share the seed, so the same coalitions,
and one forward per coalition gives every token's value: the evaluations are counted once per text, over
its explained tokens (the prior's 3 per token), as that benchmark counts leave-one-out occlusion.

Run: ``attn-plugins bench sampling --json`` (``--quick``: a few texts, two seeds; ``--only minilm`` or
``--only generation``: one part); the committed result is ``benchmarks/results/sampling.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .command import bench_parser
from .stats import mean_ci
from .threads import torch_threads

BUDGETS = (7, 10, 20, 50, 100, 500)
SEEDS = 5
ESTIMATORS = (
    "stratified design (no prior)",
    "regression (cplrp_mask prior)",
    "regression (no prior)",
    "cv coalition (cplrp_mask)",
    "coalition (no control variate)",
    "permutation (antithetic)",
    "shap Permutation",
    "shap Partition",
)
CHEAP = "cplrp_mask"
# "dev": the texts the prior's weight was chosen on (24 of them, one pairing); "test": never looked at.
SPLITS = ("all", "dev", "test")
PARTS = ("minilm", "generation")
# the estimators that need no strings (shap's explainers do): the ones the generation part runs
SAMPLERS = ESTIMATORS[:-2]


def spearman_vs_exact(scores: np.ndarray, case: Any) -> float:
    """Spearman of ``scores`` with the exact values over the maskable tokens; 0 for a constant ranking."""
    from .faithful import agreement

    rho = agreement(np.asarray(scores, dtype=np.float64), case)["spearman"]
    return 0.0 if not np.isfinite(rho) else float(rho)


def _shap(case: Any, masker: Any, algorithm: str, budget: int, seed: int) -> tuple[np.ndarray, int] | None:
    """shap's explainer at ``budget`` with model values looked up, seeded as the faithful benchmark does."""
    import shap

    from .faithful import seed_numba

    if algorithm == "permutation" and budget < 2 * len(case.players) + 1:
        return None
    lookup = dict(zip(case.strings, case.values))
    rows = [0]

    def fn(texts: Sequence[str]) -> np.ndarray:
        rows[0] += len(texts)
        return np.array([lookup[str(t)] for t in texts])

    np.random.seed(seed)
    seed_numba(seed)
    seeded = {"seed": seed} if algorithm == "permutation" else {}
    e = shap.Explainer(fn, masker, algorithm=algorithm, **seeded)([case.text], max_evals=budget, silent=True)
    return np.asarray(e.values[0], dtype=np.float64), rows[0]


def sampled(
    game: Callable[[np.ndarray], np.ndarray],
    p: int,
    c: np.ndarray,
    cheap_fe: float,
    budget: int,
    seed: int,
    seen: dict[str, set[int]] | None = None,
) -> dict[str, tuple[np.ndarray, int, float]]:
    """``{estimator: (values [p], model evaluations, forward-equivalents of the cheap method)}`` at one budget.

    ``seen``: where to add, per estimator, the coalitions (bit patterns) it evaluated.
    """
    from ..explain.estimators import (
        coalition_estimate,
        permutation_estimate,
        regression_estimate,
        stratified_estimate,
    )

    bits = 1 << np.arange(p, dtype=np.int64)

    def g(name: str) -> Callable[[np.ndarray], np.ndarray]:
        if seen is None:
            return game

        def recorded(masks: np.ndarray) -> np.ndarray:
            seen.setdefault(name, set()).update((masks.astype(np.int64) @ bits).tolist())
            return game(masks)

        return recorded

    runs = {
        "stratified design (no prior)": (stratified_estimate(g("stratified design (no prior)"), p, budget, seed), 0.0),
        "regression (cplrp_mask prior)": (
            regression_estimate(g("regression (cplrp_mask prior)"), p, c, budget, seed),
            cheap_fe,
        ),
        "regression (no prior)": (regression_estimate(g("regression (no prior)"), p, None, budget, seed), 0.0),
        "cv coalition (cplrp_mask)": (coalition_estimate(g("cv coalition (cplrp_mask)"), p, c, budget, seed), cheap_fe),
        "coalition (no control variate)": (
            coalition_estimate(g("coalition (no control variate)"), p, None, budget, seed),
            0.0,
        ),
        "permutation (antithetic)": (permutation_estimate(g("permutation (antithetic)"), p, budget, seed), 0.0),
    }
    return {name: (est.values, est.evaluations, fe) for name, (est, fe) in runs.items()}


def lookup_game(case: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The game of a case (or a generation step): coalition masks [k, p] -> their cached values [k]."""
    bits = 1 << np.arange(len(case.players))
    return lambda masks: case.values[masks.astype(np.int64) @ bits]


def _full(values: np.ndarray, case: Any) -> np.ndarray:
    out = np.zeros(len(case.phi))
    out[case.players] = values
    return out


def score_case(case: Any, cheap: np.ndarray, cheap_fe: float, masker: Any, budgets: Sequence[int], seeds: int) -> dict:
    """``{estimator: {budget: (mean Spearman over seeds, mean forward-equivalents)}}`` for one case."""
    p = len(case.players)
    c = np.asarray(cheap, dtype=np.float64)[case.players]
    game = lookup_game(case)
    out: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in ESTIMATORS}
    for budget in budgets:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ESTIMATORS}
        for k in range(seeds):
            seed = 1000 * budget + k
            for name, (values, evaluations, fe) in sampled(game, p, c, cheap_fe, budget, seed).items():
                runs[name].append((spearman_vs_exact(_full(values, case), case), evaluations + fe))
            shapped = _shap(case, masker, "permutation", budget, seed)
            if shapped is not None:
                runs["shap Permutation"].append((spearman_vs_exact(shapped[0], case), shapped[1]))
            if k == 0:  # Partition draws nothing at random: one run per budget
                shapped = _shap(case, masker, "partition", budget, seed)
                runs["shap Partition"].append((spearman_vs_exact(shapped[0], case), shapped[1]))
        for name, r in runs.items():
            if r:
                out[name][budget] = (float(np.mean([x[0] for x in r])), float(np.mean([x[1] for x in r])))
    return out


def score_text_steps(
    steps: Sequence[Any], cheap: Sequence[np.ndarray], cheap_fe: Sequence[float], budgets: Sequence[int], seeds: int
) -> dict[str, dict[int, list[tuple[float, float]]]]:
    """The generation part, one text: ``{estimator: {budget: [(Spearman, forward-equivalents) per step]}}``.

    The steps (explained tokens) of one text share each seed; one forward per coalition gives every step's
    value, so an estimator's evaluations are the distinct coalitions it asked for over all the steps, spread
    over them; its cheap method's cost is paid per step.
    """
    out: dict[str, dict[int, list[tuple[float, float]]]] = {name: {} for name in SAMPLERS}
    m = len(steps)
    for budget in budgets:
        runs: dict[str, list[list[tuple[float, float]]]] = {name: [[] for _ in steps] for name in SAMPLERS}
        for k in range(seeds):
            seed = 1000 * budget + k
            seen: dict[str, set[int]] = {}
            results = [
                sampled(lookup_game(step), len(step.players), np.asarray(c)[step.players], fe, budget, seed, seen)
                for step, c, fe in zip(steps, cheap, cheap_fe)
            ]
            for j, result in enumerate(results):
                for name, (values, _, fe) in result.items():
                    cost = len(seen[name]) / m + fe
                    runs[name][j].append((spearman_vs_exact(_full(values, steps[j]), steps[j]), cost))
        for name in SAMPLERS:
            out[name][budget] = [
                (float(np.mean([x[0] for x in r])), float(np.mean([x[1] for x in r]))) for r in runs[name]
            ]
    return out


def _summary(per_text: dict, split: str, seed: int, n_resamples: int) -> dict[str, Any]:
    """Per estimator and budget: mean Spearman with its bootstrap interval, forward-equivalents, texts."""
    block: dict[str, Any] = {}
    for name, by_budget in per_text.items():
        entry = {}
        for budget, values in by_budget.items():
            chosen = [v for v in values if split == "all" or v[2] == split]
            if chosen:
                entry[str(budget)] = {
                    "spearman": mean_ci([v[0] for v in chosen], seed, n_resamples),
                    "forward_equivalents": round(float(np.mean([v[1] for v in chosen])), 2),
                    "texts": len(chosen),
                }
        block[name] = entry
    return block


def _versus_shap(per_text: dict, seed: int, n_resamples: int) -> dict[str, Any]:
    """Per estimator and budget: its Spearman minus shap Permutation's, text by text, on the texts both explained."""
    shap_rows = per_text.get("shap Permutation", {})
    out: dict[str, Any] = {}
    for name in ESTIMATORS[:-2]:
        entry = {}
        for budget, rows in shap_rows.items():
            theirs = {r[3]: r[0] for r in rows}
            diffs = [r[0] - theirs[r[3]] for r in per_text[name].get(budget, []) if r[3] in theirs]
            if diffs:
                entry[str(budget)] = {**mean_ci(diffs, seed, n_resamples), "wins": int(np.sum(np.array(diffs) > 0))}
        out[name] = entry
    return out


def _minilm(quick: bool, seed: int, seeds: int, n_resamples: int) -> tuple[dict[str, Any], int, int]:
    """The MiniLM part: per pairing and split, every estimator's summary; the texts, exact values computed now."""
    from ..methods import get_method
    from .capture import minilm
    from .exact import DEFAULT_CACHE, ExactCache, text_masker
    from .faithful import PAIRINGS, _similarity_case, load_texts, reference_of
    from .forward_cost import record_cost

    model, tok = minilm()
    data = load_texts()
    items = data["texts"][:2] + data["texts"][-1:] if quick else data["texts"]
    cache = ExactCache(DEFAULT_CACHE)
    ctx = {"refs": {}, "masker": text_masker(tok), "cache": cache, "recompute": False, "computed": 0}
    method = get_method(CHEAP)
    out: dict[str, Any] = {}
    for pairing in PAIRINGS:
        per_text: dict[str, dict[int, list[tuple[float, float, str, str]]]] = {}
        for item in items:
            case = _similarity_case(model, tok, item, reference_of(data, item, pairing), pairing, cache, ctx)
            record = method.capture(model, tok, case.text, gradient_target=case.gradient_target)
            cheap = np.asarray(method(record), dtype=np.float64)
            cheap_fe = float(record_cost(method, record))
            per_text.setdefault(CHEAP, {}).setdefault(0, []).append(
                (spearman_vs_exact(cheap, case), cheap_fe, case.split, case.key)
            )
            for name, by_budget in score_case(case, cheap, cheap_fe, ctx["masker"], BUDGETS, seeds).items():
                for budget, value in by_budget.items():
                    per_text.setdefault(name, {}).setdefault(budget, []).append((*value, case.split, case.key))
        out[pairing] = {split: _summary(per_text, split, seed, n_resamples) for split in SPLITS}
        out[pairing]["versus_shap"] = _versus_shap(per_text, seed, n_resamples)
    return out, len(items), ctx["computed"]


def _generation(quick: bool, seed: int, seeds: int) -> dict[str, Any]:
    """The generation part: per trained task, every sampler's summary over the explained tokens."""
    from ..methods import get_method
    from . import generation
    from .forward_cost import record_cost

    config = generation.Config.quick() if quick else generation.Config()
    method = get_method(CHEAP)
    tasks: dict[str, Any] = {}
    for task in generation.TASK_NAMES:
        started = time.perf_counter()
        trained = generation.TASKS[task](config, seed)
        per_step: dict[str, dict[int, list[tuple[float, float, str, str]]]] = {}
        for text in trained.texts:
            cheap, cheap_fe = [], []
            for step in text.steps:
                record = method.capture(
                    trained.model, trained.tokenizer, inputs=step.inputs, gradient_target=step.target
                )
                scores = np.asarray(method(record), dtype=np.float64)
                cheap.append(scores)
                cheap_fe.append(float(record_cost(method, record)))
                per_step.setdefault(CHEAP, {}).setdefault(0, []).append(
                    (spearman_vs_exact(scores, step), cheap_fe[-1], "all", step.key)
                )
            for name, by_budget in score_text_steps(text.steps, cheap, cheap_fe, BUDGETS, seeds).items():
                for budget, rows in by_budget.items():
                    for step, row in zip(text.steps, rows):
                        per_step.setdefault(name, {}).setdefault(budget, []).append((*row, "all", step.key))
        tasks[task] = {
            "model": type(trained.model).__name__,
            "texts": len(trained.texts),
            "tokens": sum(len(t.steps) for t in trained.texts),
            "max_players": max(len(s.players) for t in trained.texts for s in t.steps),
            "estimators": _summary(per_step, "all", seed, config.n_resamples),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return tasks


def run(quick: bool = False, seed: int = 0, threads: int = 1, only: str | None = None) -> dict[str, Any]:
    """The whole comparison (or one part of it: ``only`` in PARTS); returns the JSON-ready result."""
    from ..errors import InputError

    if only is not None and only not in PARTS:
        raise InputError(f"only must be one of {', '.join(PARTS)}, not {only!r}")
    t0 = time.perf_counter()
    seeds = 2 if quick else SEEDS
    n_resamples = 200 if quick else 1000
    result: dict[str, Any] = {
        "benchmark": "sampling",
        "quick": quick,
        "seed": seed,
        "threads": threads,
        "date": time.strftime("%Y-%m-%d"),
        "seeds_per_text": seeds,
        "budgets": list(BUDGETS),
    }
    with torch_threads(threads):
        if only in (None, "minilm"):
            pairings, texts, computed = _minilm(quick, seed, seeds, n_resamples)
            result.update(
                task="all-MiniLM-L6-v2 similarity (faithful benchmark texts), exact values from faithful_exact.npz",
                texts=texts,
                computed_exact_now=computed,
                pairings=pairings,
            )
        if only in (None, "generation"):
            result["generation"] = _generation(quick, seed, seeds)
    result["elapsed_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser("attn-plugins bench sampling", __doc__.splitlines()[0], "three texts, two seeds")
    parser.add_argument("--only", choices=PARTS, help="run one part alone (generation: the trained tiny models)")
    args = parser.parse_args(argv)
    only = {"only": args.only} if args.only else {}
    result = run(quick=args.quick, seed=args.seed, threads=args.threads, **only)
    print(json.dumps(result, indent=None if args.json else 1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
