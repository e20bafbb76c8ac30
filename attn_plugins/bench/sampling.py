"""Sampling Shapley estimators against exact values per budget: the control variate, plain sampling, shap.

On the faithfulness benchmark's MiniLM similarity task (120 texts, both pairings; the exact values and every
model evaluation looked up from ``benchmarks/results/faithful_exact.npz``, so no estimator runs the model),
each estimator is scored by Spearman against the exact Shapley values over the maskable tokens, at budgets
of model evaluations, averaged over seeds per text, then over texts (bootstrap 95 % interval):

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
Forward-equivalents: the model evaluations made (distinct coalitions), plus 3 for ``cplrp_mask``.

Run: ``attn-plugins bench sampling --json`` (``--quick``: a few texts, two seeds); the committed result is
``benchmarks/results/sampling.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .command import bench_parser
from .stats import mean_ci
from .threads import torch_threads

BUDGETS = (10, 20, 50, 100, 500)
SEEDS = 5
ESTIMATORS = (
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


def score_case(case: Any, cheap: np.ndarray, cheap_fe: float, masker: Any, budgets: Sequence[int], seeds: int) -> dict:
    """``{estimator: {budget: (mean Spearman over seeds, mean forward-equivalents)}}`` for one case."""
    from ..explain.estimators import coalition_estimate, permutation_estimate, regression_estimate

    p = len(case.players)
    c = np.asarray(cheap, dtype=np.float64)[case.players]

    def game(masks: np.ndarray) -> np.ndarray:
        return case.values[masks.astype(np.int64) @ (1 << np.arange(p))]

    def full(values: np.ndarray) -> np.ndarray:
        out = np.zeros(len(case.ids))
        out[case.players] = values
        return out

    out: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in ESTIMATORS}
    for budget in budgets:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ESTIMATORS}
        for k in range(seeds):
            seed = 1000 * budget + k
            est = regression_estimate(game, p, c, budget, seed)
            runs["regression (cplrp_mask prior)"].append(
                (spearman_vs_exact(full(est.values), case), est.evaluations + cheap_fe)
            )
            est = regression_estimate(game, p, None, budget, seed)
            runs["regression (no prior)"].append((spearman_vs_exact(full(est.values), case), est.evaluations))
            est = coalition_estimate(game, p, c, budget, seed)
            runs["cv coalition (cplrp_mask)"].append(
                (spearman_vs_exact(full(est.values), case), est.evaluations + cheap_fe)
            )
            est = coalition_estimate(game, p, None, budget, seed)
            runs["coalition (no control variate)"].append((spearman_vs_exact(full(est.values), case), est.evaluations))
            est = permutation_estimate(game, p, budget, seed)
            runs["permutation (antithetic)"].append((spearman_vs_exact(full(est.values), case), est.evaluations))
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


def run(quick: bool = False, seed: int = 0, threads: int = 1) -> dict[str, Any]:
    """The whole comparison; returns the JSON-ready result."""
    from ..methods import get_method
    from .capture import minilm
    from .exact import DEFAULT_CACHE, ExactCache, text_masker
    from .faithful import PAIRINGS, _similarity_case, load_texts, reference_of
    from .forward_cost import record_cost

    t0 = time.perf_counter()
    budgets = BUDGETS
    seeds = 2 if quick else SEEDS
    n_resamples = 200 if quick else 1000
    with torch_threads(threads):
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
                for name, by_budget in score_case(case, cheap, cheap_fe, ctx["masker"], budgets, seeds).items():
                    for budget, value in by_budget.items():
                        per_text.setdefault(name, {}).setdefault(budget, []).append((*value, case.split, case.key))
            out[pairing] = {split: _summary(per_text, split, seed, n_resamples) for split in SPLITS}
            out[pairing]["versus_shap"] = _versus_shap(per_text, seed, n_resamples)
    return {
        "benchmark": "sampling",
        "quick": quick,
        "seed": seed,
        "threads": threads,
        "date": time.strftime("%Y-%m-%d"),
        "task": "all-MiniLM-L6-v2 similarity (faithful benchmark texts), exact values from faithful_exact.npz",
        "texts": len(items),
        "seeds_per_text": seeds,
        "budgets": list(budgets),
        "computed_exact_now": ctx["computed"],
        "pairings": out,
        "elapsed_seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser("attn-plugins bench sampling", __doc__.splitlines()[0], "three texts, two seeds")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, seed=args.seed, threads=args.threads)
    print(json.dumps(result, indent=None if args.json else 1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
