"""Faithfulness benchmark: every method against exact Shapley values, on a real model and on planted rationales.

Two tasks, each with texts short enough (at most 12 maskable tokens) to evaluate every coalition:

* **MiniLM similarity**: the packaged all-MiniLM-L6-v2, cosine similarity of a text's mean-pooled embedding
  to a reference sentence; 120 texts written for the benchmark (``faithful_texts.json``: 60 ``dev`` texts
  the method variants were chosen on, 60 ``test`` texts scored only afterwards), each under two
  pairings: ``topic`` (the reference sentence of the text's own topic) and ``round_robin`` (references
  assigned in turn, frozen before any method ran: mostly unrelated pairs);
* **planted rationales**: the classifier of :mod:`attn_plugins.bench.planted` (same data, seed and
  training), explaining the logit of its predicted class on held-out sentences of 7-12 words.

Exact Shapley values use shap's ``Text`` masker's masking (:mod:`attn_plugins.bench.exact`). Every method
is scored per text by Spearman, Kendall and top-3 overlap with them over the maskable tokens, and by
erasure of the explained value (AOPC comprehensiveness and sufficiency, deletion and insertion areas,
tokens replaced by the mask token), each summarized as a mean with a bootstrap 95 % interval; with its cost in
forward-equivalents (a forward pass 1, a backward pass 2; for shap, the masked inputs it evaluated) and
milliseconds per text (median, methods run in turn on each text). Next to the methods: shap's Partition,
Permutation and Kernel explainers at 20, 50, 100 and 500 evaluations (model values looked up from the
exact cache; their time is their own overhead plus the measured time per evaluated input), captum's
LayerIntegratedGradients and LayerGradientXActivation on the word embeddings, leave-one-out occlusion, and
random scores. Attention methods that read query rows are scored with each row choice (first, mean,
weighted by each row's share of the similarity).

Run: ``attn-plugins bench faithful --json`` (``--quick``: a few texts; ``--recompute``: recompute the
exact values instead of reading ``benchmarks/results/faithful_exact.npz``, and write them there).
"""

from __future__ import annotations

import json
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .command import bench_parser
from .forward_cost import record_cost
from .stats import mean_ci
from .threads import torch_threads

PAIRINGS = ("topic", "round_robin")
SPLITS = ("all", "dev", "test")
BUDGETS = (20, 50, 100, 500)
SHAP_ALGORITHMS = ("partition", "permutation", "kernel")
# Methods that read attention rows, and the row choices they are scored with.
ROW_METHODS = ("raw", "rollout", "flow", "grad_attention", "gae", "norm", "alti", "value_zeroing")
ROWS = ("first", "mean", "weighted")
# Methods that explain the captured target itself (no rows): registered names, plus benchmark-only variants.
TARGET_METHODS = ("attnlrp", "cplrp", "cplrp_mask", "decompx")
# Other choices of the same methods (name -> method, call options), scored for agreement only.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "raw[last layer]": ("raw", {"layers": -1}),
    "rollout[max heads]": ("rollout", {"head_reduce": "max"}),
    "rollout[residual 0]": ("rollout", {"residual": 0.0}),
    "grad_attention[positive]": ("grad_attention", {"positive": True}),
    "norm[last layer]": ("norm", {"layers": -1}),
}
METRICS = ("spearman", "kendall", "top3", "aopc_comprehensiveness", "aopc_sufficiency", "deletion", "insertion")
PLANTED_METRICS = (*METRICS, "token_f1", "auprc")
HIGHER_IS_BETTER = {
    "spearman": True,
    "kendall": True,
    "top3": True,
    "aopc_comprehensiveness": True,
    "aopc_sufficiency": False,
    "deletion": False,
    "insertion": True,
    "token_f1": True,
    "auprc": True,
}
IG_STEPS = 20
GOAL_SPEARMAN = 0.70
GOAL_MAX_FE = 3.0
GOAL_TOKEN_F1 = 0.95
# Parts of the benchmark that run alone (--only): the trained decoder, encoder-decoder and lookup models.
PARTS = ("generation",)


def load_texts() -> dict[str, Any]:
    """The benchmark's texts, topics and reference sentences (package data)."""
    return json.loads(resources.files("attn_plugins.bench").joinpath("faithful_texts.json").read_text("utf-8"))


def reference_of(data: dict[str, Any], item: dict[str, Any], pairing: str) -> str:
    """The reference sentence a text is compared with under ``pairing``."""
    if pairing == "topic":
        return data["references"][item["topic"]]
    if pairing == "round_robin":
        return data["references"][item["id"] % 4]
    raise InputError(f"pairing must be one of {', '.join(PAIRINGS)}, not {pairing!r}")


# ---------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One explained output with its exact Shapley values and everything the scorers need."""

    key: str
    text: str
    split: str
    ids: np.ndarray  # [T] token ids
    special: np.ndarray  # [T] bool, never masked
    players: np.ndarray  # positions of the maskable tokens
    values: np.ndarray  # [2^p] the explained value of every coalition
    strings: list[str]  # the masked strings shap's explainers evaluate, same order
    phi: np.ndarray  # [T] exact Shapley values (0 on special tokens)
    gradient_target: Any  # what method captures explain
    batched: Callable[[torch.Tensor], torch.Tensor]  # ids [N, T] -> explained value [N] (captum)
    target_index: int
    mask_id: int
    row_weights: Callable[[], np.ndarray] | None = None
    rationale: np.ndarray | None = None  # planted words (planted task only)
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The explained value [N, 1] of token-id rows in which some maskable tokens are the mask token.

        Every such row is a coalition whose value the exact cache holds (masked as shap's Text masker
        does), so erasure metrics cost no model evaluation and agree with the exact values' masking.
        """
        kept = np.asarray(batch)[:, self.players] != self.mask_id
        return self.values[kept.astype(np.int64) @ (1 << np.arange(len(self.players)))][:, None]


def _similarity_case(model: Any, tok: Any, item: dict, reference: str, pairing: str, cache: Any, ctx: dict) -> Case:
    from ..explain.targets import pooled, resolve
    from .exact import exact_case

    spec = resolve(model, tok, item["text"], reference=reference, cache=ctx["refs"])
    key = f"minilm.{pairing}.{item['id']}"
    players, values, strings, computed = exact_case(
        spec.fn, ctx["masker"], item["text"], key, ctx["cache"], ctx["recompute"]
    )
    ctx["computed"] += int(computed)
    enc = tok(item["text"], return_special_tokens_mask=True)
    ids = np.asarray(enc["input_ids"])
    ref = ctx["refs"][("similarity", reference, "mean")]

    def batched(input_ids: torch.Tensor) -> torch.Tensor:
        h = model(input_ids=input_ids).last_hidden_state
        return torch.nn.functional.cosine_similarity(pooled(h, torch.ones(h.shape[:2]), "mean"), ref[None], dim=-1)

    from .exact import shapley_values

    return Case(
        key=key,
        text=item["text"],
        split=item["split"],
        ids=ids,
        special=np.asarray(enc["special_tokens_mask"], dtype=bool),
        players=players,
        values=values,
        strings=strings,
        phi=shapley_values(values, players, len(ids)),
        gradient_target=spec.gradient_targets[0],
        batched=batched,
        target_index=0,
        mask_id=int(tok.mask_token_id),
        row_weights=spec.row_weights,
        meta={"f": float(values[-1]), "f_masked": float(values[0]), "reference": reference, "topic": item["topic"]},
    )


# ---------------------------------------------------------------------------- scoring
def agreement(scores: np.ndarray, case: Case) -> dict[str, float]:
    """Spearman, Kendall and top-3 overlap with the exact Shapley values over the maskable tokens."""
    from ..explain.compare import agreement as rank_agreement

    s = np.asarray(scores, dtype=np.float64)[case.players]
    out = rank_agreement(s, case.phi[case.players], 3)
    return {"spearman": out["spearman"], "kendall": out["kendall"], "top3": out["top_k"]}


def erasure(scores: np.ndarray, case: Case, mask_id: int) -> dict[str, float]:
    """AOPC comprehensiveness and sufficiency, deletion and insertion areas of the explained value.

    Tokens are replaced by the mask token; the value of each erased input comes from the exact cache.
    """
    from ..metrics import faithfulness

    kw = {"baseline_id": mask_id, "protected": case.special}
    s = np.asarray(scores, dtype=np.float64)
    aopc = faithfulness.aopc(case.predict, case.ids, s, case.target_index, **kw)
    return {
        "aopc_comprehensiveness": aopc["comprehensiveness"].value,
        "aopc_sufficiency": aopc["sufficiency"].value,
        "deletion": faithfulness.deletion_curve(case.predict, case.ids, s, case.target_index, **kw).area,
        "insertion": faithfulness.insertion_curve(case.predict, case.ids, s, case.target_index, **kw).area,
    }


def evaluate(scores: np.ndarray, case: Case, mask_id: int, erase: bool = True) -> dict[str, float]:
    """Agreement with the exact values; with ``erase``, erasure metrics and (planted) plausibility too."""
    from ..metrics import plausibility

    s = np.asarray(scores, dtype=np.float64)
    values = agreement(s, case)
    if erase:
        values.update(erasure(s, case, mask_id))
        if case.rationale is not None:
            values["token_f1"] = plausibility.token_f1(s, case.rationale, protected=case.special)
            values["auprc"] = plausibility.auprc(s, case.rationale, protected=case.special)
    return values


class Scores:
    """Per-method, per-case results: metric values, cost, time."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.kind: dict[str, str] = {}

    def add(self, name: str, case: Case, values: dict[str, float], fe: float, seconds: float, kind: str) -> None:
        """Record one method's scores on one case, with its cost (forward-equivalents, seconds)."""
        self.kind.setdefault(name, kind)
        self.rows.setdefault(name, []).append(
            {"case": case.key, "split": case.split, "fe": float(fe), "ms": 1000 * seconds, **values}
        )

    def per_text(self, metric: str) -> dict[str, Any]:
        """``{"cases": [...], method: [value per case or None]}``: one metric per text, to recompute statistics."""
        cases = list(dict.fromkeys(r["case"] for rows in self.rows.values() for r in rows))
        out: dict[str, Any] = {"metric": metric, "cases": cases}
        for name, rows in self.rows.items():
            by_case = {r["case"]: r.get(metric) for r in rows}
            out[name] = [
                None if by_case.get(c) is None or not np.isfinite(by_case[c]) else round(float(by_case[c]), 4)
                for c in cases
            ]
        return out

    def summary(self, split: str, seed: int, n_resamples: int, metrics: Sequence[str]) -> dict[str, Any]:
        """Per method, each metric's mean and bootstrap 95 % interval over the cases of ``split`` (or ``"all"``)."""
        out = {}
        for name, rows in self.rows.items():
            chosen = [r for r in rows if split == "all" or r["split"] == split]
            if not chosen:
                continue
            entry: dict[str, Any] = {"kind": self.kind[name], "texts": len(chosen)}
            for m in metrics:
                vals = [r[m] for r in chosen if m in r and r[m] is not None and np.isfinite(r[m])]
                if vals:
                    entry[m] = mean_ci(vals, seed, n_resamples)
            entry["forward_equivalents"] = round(float(np.mean([r["fe"] for r in chosen])), 2)
            entry["ms_per_text"] = round(float(np.median([r["ms"] for r in chosen])), 2)
            out[name] = entry
        return out


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def score_methods(
    model: Any,
    tok: Any,
    case: Case,
    scores: Scores,
    mask_id: int,
    rows: bool,
    rng: np.random.Generator,
    ms_per_row: float,
) -> None:
    """Every registered method (and the benchmark's variants) on one case."""
    from ..methods import get_method
    from ..methods.lrp import LRP

    weights, w_seconds = (None, 0.0)
    if rows and case.row_weights is not None:
        weights, w_seconds = _timed(case.row_weights)
    for name in ROW_METHODS:
        method = get_method(name)
        record, seconds = _timed(
            lambda method=method: method.capture(model, tok, case.text, gradient_target=case.gradient_target)
        )
        fe = record_cost(method, record)
        matrix, m_seconds = _timed(lambda method=method, record=record: method(record, position="all"))
        seconds += m_seconds
        choices = {"first": (matrix[0], 0.0, 0.0)}
        if rows:
            choices["mean"] = (matrix.mean(0), 0.0, 0.0)
            if weights is not None:
                choices["weighted"] = (weights @ matrix, 1.0, w_seconds)
        for row, (s, extra_fe, extra_s) in choices.items():
            values = evaluate(s, case, mask_id)
            scores.add(f"{name}[{row}]", case, values, fe + extra_fe, seconds + extra_s, "attention rows")
        for variant, (base, options) in VARIANTS.items():
            if base != name:
                continue
            m = method(record, position="all", **options)
            picks = {"first": (m[0], 0.0)}
            if rows:
                picks["mean"] = (m.mean(0), 0.0)
                if weights is not None:
                    picks["weighted"] = (weights @ m, 1.0)
            for row, (s, extra_fe) in picks.items():
                scores.add(f"{variant}[{row}]", case, agreement(s, case), fe + extra_fe, seconds, "variant")
    targets = [get_method(n) for n in TARGET_METHODS] + [LRP("attnlrp_mask", rule="attnlrp", baseline="mask")]
    for method in targets:
        record, seconds = _timed(
            lambda method=method: method.capture(model, tok, case.text, gradient_target=case.gradient_target)
        )
        values = evaluate(method(record), case, mask_id)
        scores.add(method.name, case, values, record_cost(method, record), seconds, "relevance")
        if method.name == "attnlrp":
            for part in ("word", "emb_out"):
                scores.add(
                    f"attnlrp[{part}]", case, agreement(method(record, part=part), case), 3.0, seconds, "variant"
                )
    _captum(model, case, scores, mask_id)
    # Leave-one-out occlusion from the exact cache: p masked copies and the text itself.
    full = 2 ** len(case.players) - 1
    loo = np.zeros(len(case.ids))
    loo[case.players] = case.values[full] - case.values[full ^ (1 << np.arange(len(case.players)))]
    n = len(case.players) + 1
    scores.add("occlusion (leave-one-out)", case, evaluate(loo, case, mask_id), n, n * ms_per_row / 1000, "reference")
    scores.add("random", case, evaluate(rng.random(len(case.ids)), case, mask_id), 0.0, 0.0, "reference")


def _captum(model: Any, case: Case, scores: Scores, mask_id: int) -> None:
    """captum's LayerIntegratedGradients (mask-token baseline) and LayerGradientXActivation at the word embeddings."""
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    layer = model.get_input_embeddings()
    ids = torch.as_tensor(case.ids)[None]
    base = ids.clone()
    base[0, torch.as_tensor(case.players)] = mask_id

    def integrated() -> np.ndarray:
        lig = LayerIntegratedGradients(case.batched, layer)
        attr = lig.attribute(ids, baselines=base, n_steps=IG_STEPS, internal_batch_size=IG_STEPS)
        return attr[0].sum(-1).detach().double().numpy()

    s, seconds = _timed(integrated)
    values = evaluate(s, case, mask_id)
    scores.add(f"captum IntegratedGradients ({IG_STEPS} steps)", case, values, 3 * IG_STEPS, seconds, "reference")

    def gradient_x_input() -> np.ndarray:
        linear = getattr(case.gradient_target, "relevance", None)

        def fwd(input_ids: torch.Tensor) -> torch.Tensor:
            if linear is None:
                return case.batched(input_ids)
            return linear(model(input_ids=input_ids))[None]

        attr = LayerGradientXActivation(fwd, layer).attribute(ids)
        return attr[0].sum(-1).detach().double().numpy()

    s, seconds = _timed(gradient_x_input)
    values = evaluate(s, case, mask_id)
    scores.add("captum GradientXActivation", case, values, 3.0, seconds, "reference")


def score_shap(
    case: Case, masker: Any, scores: Scores, ms_per_row: float, mask_id: int, budgets: Sequence[int]
) -> None:
    """shap's Partition, Permutation and Kernel explainers at each budget, model values looked up from the cache."""
    import shap

    lookup = dict(zip(case.strings, case.values))
    p = len(case.players)
    counter = {"rows": 0}

    def fn(texts: Sequence[str]) -> np.ndarray:
        counter["rows"] += len(texts)
        return np.array([lookup[str(t)] for t in texts])

    def fbin(z: np.ndarray) -> np.ndarray:
        counter["rows"] += len(z)
        index = (np.asarray(z) > 0.5).astype(np.int64) @ (1 << np.arange(p))
        return case.values[index]

    for budget in budgets:
        for algo in SHAP_ALGORITHMS:
            name = f"shap {algo.capitalize()} ({budget})"
            np.random.seed(budget)
            counter["rows"] = 0
            start = time.perf_counter()
            if algo == "permutation" and budget < 2 * p + 1:
                # shap's Permutation explainer refuses a budget below 2p + 1; the text is left out, not faked.
                continue
            if algo == "kernel":
                kex = shap.KernelExplainer(fbin, np.zeros((1, p)))
                vals = np.asarray(kex.shap_values(np.ones((1, p)), nsamples=budget, silent=True)).reshape(-1)
                s = np.zeros(len(case.ids))
                s[case.players] = vals
            else:
                # Permutation reseeds numpy when built (from the system without a seed) and shuffles the
                # masker's token tree with numba's own generator: seed both
                seeded = {"seed": budget} if algo == "permutation" else {}
                seed_numba(budget)
                e = shap.Explainer(fn, masker, algorithm=algo, **seeded)([case.text], max_evals=budget, silent=True)
                s = np.asarray(e.values[0], dtype=np.float64)
            overhead = time.perf_counter() - start
            values = evaluate(s, case, mask_id)
            rows = counter["rows"]
            scores.add(name, case, values, rows, overhead + rows * ms_per_row / 1000, "shap")


_NUMBA_SEED: list[Callable[[int], None]] = []


def seed_numba(seed: int) -> None:
    """Seed numba's random generator, which shap's compiled helpers (partition_tree_shuffle) draw from."""
    if not _NUMBA_SEED:
        import numba

        @numba.njit(cache=False)
        def _seed(s: int) -> None:
            np.random.seed(s)

        _NUMBA_SEED.append(_seed)
    _NUMBA_SEED[0](seed)


# ---------------------------------------------------------------------------- tasks
def minilm_task(
    quick: bool, seed: int, cache_path: Path | None, recompute: bool, n_resamples: int
) -> tuple[dict[str, Any], Any]:
    """The MiniLM similarity task under both pairings."""
    from .capture import minilm
    from .exact import ExactCache, text_masker

    model, tok = minilm()
    data = load_texts()
    items = data["texts"]
    if quick:
        picked = (
            sorted(items, key=lambda t: (t["players"], t["id"]))[:2] + [t for t in items if t["split"] == "test"][:1]
        )
        items = list({t["id"]: t for t in picked}.values())  # the two shortest and a test text, each once
    cache = ExactCache(cache_path)
    ctx = {"refs": {}, "masker": text_masker(tok), "cache": cache, "recompute": recompute, "computed": 0}
    mask_id = int(tok.mask_token_id)
    budgets = BUDGETS[:2] if quick else BUDGETS
    rng = np.random.default_rng(seed)
    ms_per_row = _ms_per_row(model, tok)
    out: dict[str, Any] = {"pairings": {}}
    exact_seconds = 0.0
    for pairing in PAIRINGS:
        scores = Scores()
        cases = []
        for item in items:
            case, seconds = _timed(
                lambda item=item, pairing=pairing: _similarity_case(
                    model, tok, item, reference_of(data, item, pairing), pairing, cache, ctx
                )
            )
            exact_seconds += seconds
            cases.append(case)
        for case in cases:
            score_methods(model, tok, case, scores, mask_id, rows=True, rng=rng, ms_per_row=ms_per_row)
            score_shap(case, ctx["masker"], scores, ms_per_row, mask_id, budgets)
        out["pairings"][pairing] = {
            "texts": len(cases),
            "similarity": _describe_values(cases),
            "splits": {
                split: scores.summary(split, seed, n_resamples, METRICS)
                for split in SPLITS
                if split == "all" or any(c.split == split for c in cases)
            },
            "per_text": scores.per_text("spearman"),
        }
    if cache_path is not None and ctx["computed"] and not quick:
        cache.save(cache_path)
    out["exact"] = {
        "cache": str(cache_path) if cache_path is not None else None,
        "computed_now": ctx["computed"],
        "coalitions": int(sum(2 ** t["players"] for t in items)) * len(PAIRINGS),
        "seconds": round(exact_seconds, 1),
        "masking": "shap.maskers.Text(tokenizer, mask_token='[MASK]', collapse_mask_token=False)",
    }
    out["ms_per_evaluated_input"] = round(ms_per_row, 3)
    return out, (model, tok, data, items)


def _ms_per_row(model: Any, tok: Any) -> float:
    """Milliseconds per masked input for the model function shap calls (a batch of 64 short texts, median of 3)."""
    from ..explain.targets import resolve

    spec = resolve(model, tok, "the weather in paris is cold today", reference="this movie is wonderful")
    texts = ["the weather [MASK] paris is cold today"] * 64
    spec.fn(texts)
    times = [_timed(lambda: spec.fn(texts))[1] for _ in range(3)]
    return 1000 * float(np.median(times)) / len(texts)


def _describe_values(cases: list[Case]) -> dict[str, Any]:
    f = np.array([c.meta["f"] for c in cases])
    phi = np.concatenate([c.phi[c.players] for c in cases])
    return {
        "median_similarity": round(float(np.median(f)), 4),
        "median_change_from_masked": round(float(np.median([c.meta["f"] - c.meta["f_masked"] for c in cases])), 4),
        "pairs_with_similarity_at_least_0.3": int((f >= 0.3).sum()),
        "negative_shapley_share": round(float((phi < 0).mean()), 3),
    }


def planted_task(quick: bool, seed: int, n_resamples: int) -> dict[str, Any]:
    """The planted-rationale classifier: exact Shapley values of the predicted class's logit."""
    from ..explain.targets import resolve
    from ..zoo import tiny_tokenizer
    from . import planted as P
    from .exact import exact_case, shapley_values, text_masker

    config = P.Config.quick() if quick else P.Config()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tok = tiny_tokenizer("bert")
    train_data = P.make_examples(config.n_train, rng, config.min_len, config.max_len)
    # Held-out sentences of 6-10 distractors and 1-2 triggers: at most 12 maskable tokens each.
    eval_data = P.make_examples(config.n_eval, rng, config.min_len, 10, neutral=False)
    model = P.build_model(config, seed)
    P.train(model, tok, train_data, config, seed)
    masker = text_masker(tok)
    mask_id = int(tok.mask_token_id)
    scores = Scores()
    nprng = np.random.default_rng(seed)
    correct = 0
    ms_per_row = None
    for n, ex in enumerate(eval_data):
        spec = resolve(model, tok, ex.text)
        cls = spec.meta["class"]
        correct += int(cls == ex.label)
        players, values, strings, _ = exact_case(spec.fn, masker, ex.text, f"planted.{n}", None)
        enc = tok(ex.text, return_special_tokens_mask=True)
        ids = np.asarray(enc["input_ids"])

        def batched(input_ids: torch.Tensor, cls: int = cls) -> torch.Tensor:
            return model(input_ids=input_ids).logits[:, cls]

        case = Case(
            key=f"planted.{n}",
            text=ex.text,
            split="test",
            ids=ids,
            special=np.asarray(enc["special_tokens_mask"], dtype=bool),
            players=players,
            values=values,
            strings=strings,
            phi=shapley_values(values, players, len(ids)),
            gradient_target=spec.gradient_targets[0],
            batched=batched,
            target_index=0,
            mask_id=mask_id,
            rationale=np.concatenate([[False], ex.planted, [False]]),
        )
        if ms_per_row is None:  # the classifier's time per masked input, for shap's and occlusion's cost
            batch = strings[: min(64, len(strings))]
            spec.fn(batch)
            ms_per_row = 1000 * _timed(lambda batch=batch, fn=spec.fn: fn(batch))[1] / len(batch)
        score_methods(model, tok, case, scores, mask_id, rows=False, rng=nprng, ms_per_row=ms_per_row)
        score_shap(case, masker, scores, ms_per_row, mask_id, BUDGETS[:2] if quick else BUDGETS)
    return {
        "model": {"test_accuracy": round(correct / len(eval_data), 4), "config": config.__dict__},
        "target": "logit of the predicted class",
        "texts": len(eval_data),
        "ms_per_evaluated_input": round(float(ms_per_row or 0.0), 4),
        "methods": scores.summary("all", seed, n_resamples, PLANTED_METRICS),
        "per_text": scores.per_text("spearman"),
    }


# ---------------------------------------------------------------------------- checks recorded with the run
LXT_REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "lxt_attnlrp_minilm.npz"


def lxt_check(
    model: Any, tok: Any, data: dict[str, Any], items: list[dict], path: Path = LXT_REFERENCE
) -> dict[str, Any] | None:
    """attnlrp (word-embedding readout, float64) against lxt 2.1's own AttnLRP relevances stored in ``path``.

    The file holds, per text of the ``dev`` split, lxt's relevance ``rel_<id>`` and explained value ``f_<id>``
    for the similarity to the text's ``round_robin`` reference (research h13, lxt 2.1 on the same weights).
    """
    import copy

    from ..explain.targets import resolve
    from ..methods import get_method

    if not path.exists():
        return None
    m64 = copy.deepcopy(model).double().eval()
    method = get_method("attnlrp")
    diffs, fdiffs, rel = [], [], []
    with np.load(path) as ref:
        for item in items:
            key = f"rel_{item['id']}"
            if key not in ref.files:
                continue
            spec = resolve(m64, tok, item["text"], reference=reference_of(data, item, "round_robin"))
            record = method.capture(m64, tok, item["text"], gradient_target=spec.gradient_targets[0])
            ours = method(record, part="word")
            theirs = ref[key]
            diffs.append(float(np.abs(ours - theirs).max()))
            rel.append(float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
            fdiffs.append(abs(record.meta["attnlrp"]["explained_value"] - float(ref[f"f_{item['id']}"])))
    if not diffs:
        return None
    return {
        "texts": len(diffs),
        "max_abs_diff": max(diffs),
        "max_relative_diff": max(rel),
        "max_explained_value_diff": max(fdiffs),
        "reference": "lxt 2.1 efficient AttnLRP (lxt.efficient.monkey_patch of transformers' BERT), float64, "
        "relevance = inputs_embeds * grad summed over the hidden size",
    }


def conservation(model: Any, tok: Any, data: dict[str, Any], items: list[dict]) -> dict[str, Any]:
    """The relevance budget of attnlrp and cplrp in float64 on every text (topic pairing): max residual, mean terms."""
    import copy

    from ..explain.targets import resolve
    from ..methods.lrp import budget

    m64 = copy.deepcopy(model).double().eval()
    out = {}
    for name, rule in (("attnlrp", "uniform"), ("cplrp", "detached")):
        rows = []
        for item in items:
            spec = resolve(m64, tok, item["text"], reference=reference_of(data, item, "topic"))
            enc = tok(item["text"], return_tensors="pt")
            inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
            rows.append(budget(m64, inputs, spec.gradient_targets[0], rule))
        f = np.array([r["f"] for r in rows])
        tokens = np.array([sum(r["tokens"].values()) for r in rows])
        out[name] = {
            "texts": len(rows),
            "max_abs_residual": float(max(abs(r["residual"]) for r in rows)),
            "mean_f": round(float(f.mean()), 5),
            "mean_tokens": round(float(tokens.mean()), 5),
            "mean_word": round(float(np.mean([r["tokens"]["word"] for r in rows])), 5),
            "mean_position": round(float(np.mean([r["tokens"].get("position", 0.0) for r in rows])), 5),
            "mean_token_type": round(float(np.mean([r["tokens"].get("token_type", 0.0) for r in rows])), 5),
            "mean_biases": round(float(np.mean([r["biases"] for r in rows])), 5),
            "mean_abs_biases": round(float(np.mean([abs(r["biases"]) for r in rows])), 5),
            "mean_softmax_leak": round(float(np.mean([r["softmax_leak"] for r in rows])), 5),
            "mean_abs_softmax_leak": round(float(np.mean([abs(r["softmax_leak"]) for r in rows])), 5),
        }
    return out


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals read off the result: the best method derived from attention at <= 3 forward-equivalents."""
    out: dict[str, Any] = {
        "spearman_goal": GOAL_SPEARMAN,
        "max_forward_equivalents": GOAL_MAX_FE,
        "token_f1_goal": GOAL_TOKEN_F1,
    }
    planted = result.get("planted", {}).get("methods", {})
    for pairing, block in result["minilm"]["pairings"].items():
        for split, methods in block["splits"].items():
            cheap = {
                n: m
                for n, m in methods.items()
                if m["kind"] in ("relevance", "attention rows")
                and m["forward_equivalents"] <= GOAL_MAX_FE
                and "spearman" in m
            }
            if not cheap:
                continue
            best = max(cheap, key=lambda n: cheap[n]["spearman"]["mean"])
            p20 = methods.get("shap Partition (20)", {})
            entry = {
                "best": best,
                "spearman": cheap[best]["spearman"],
                "forward_equivalents": cheap[best]["forward_equivalents"],
                "partition_20_spearman": p20.get("spearman"),
                "partition_20_forward_equivalents": p20.get("forward_equivalents"),
            }
            entry["met_spearman"] = cheap[best]["spearman"]["mean"] >= GOAL_SPEARMAN
            if p20:
                entry["above_partition_20"] = cheap[best]["spearman"]["mean"] > p20["spearman"]["mean"]
                entry["cost_vs_partition_20"] = round(
                    cheap[best]["forward_equivalents"] / p20["forward_equivalents"], 3
                )
            if best in planted and "token_f1" in planted[best]:
                entry["planted_token_f1"] = planted[best]["token_f1"]
                entry["met_planted_token_f1"] = planted[best]["token_f1"]["mean"] >= GOAL_TOKEN_F1
            out[f"{pairing}/{split}"] = entry
    return out


# ---------------------------------------------------------------------------- the run
def run(
    quick: bool = False,
    seed: int = 0,
    threads: int = 1,
    recompute: bool = False,
    cache: str | Path | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """The whole benchmark, or with ``only="generation"`` its generation part alone; returns the JSON-ready result."""
    from . import generation
    from .exact import DEFAULT_CACHE

    if only is not None:
        if only not in PARTS:
            raise InputError(f"only= must be one of {', '.join(PARTS)}, not {only!r}")
        return {"benchmark": "faithful", "quick": quick, "generation": generation.run(quick, seed, threads)}
    t0 = time.perf_counter()
    cache_path = Path(cache) if cache is not None else (DEFAULT_CACHE if DEFAULT_CACHE.parent.exists() else None)
    n_resamples = 200 if quick else 1000
    with torch_threads(threads):
        minilm_result, (model, tok, data, items) = minilm_task(quick, seed, cache_path, recompute, n_resamples)
        result: dict[str, Any] = {
            "benchmark": "faithful",
            "quick": quick,
            "seed": seed,
            "threads": threads,
            "date": time.strftime("%Y-%m-%d"),
            "higher_is_better": HIGHER_IS_BETTER,
            "minilm": {
                "model": "all-MiniLM-L6-v2 (packaged), mean pooling",
                "target": "cosine similarity of the text's embedding to the reference sentence's",
                **minilm_result,
            },
            "planted": planted_task(quick, seed, n_resamples),
        }
        dev = [t for t in items if t["split"] == "dev"]
        result["lxt"] = None if quick else lxt_check(model, tok, data, dev)
        result["conservation"] = conservation(model, tok, data, items[:3] if quick else items)
    result["generation"] = generation.run(quick, seed, threads)
    result["goals"] = goals(result)
    result["platform"] = _platform()
    result["elapsed_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _platform() -> dict[str, str]:
    import shap
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    out["shap"] = shap.__version__
    try:
        import captum

        out["captum"] = captum.__version__
    except ImportError:  # pragma: no cover - captum is a test/bench dependency
        pass
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser(
        "attn-plugins bench faithful", __doc__.splitlines()[0], "three texts per pairing, a quick planted run"
    )
    parser.add_argument("--recompute", action="store_true", help="recompute the exact Shapley values (and write them)")
    parser.add_argument(
        "--cache", help="the .npz file of exact values (default: benchmarks/results/faithful_exact.npz)"
    )
    parser.add_argument(
        "--only", choices=PARTS, help="run one part alone (generation: the trained decoder and encoder-decoder rows)"
    )
    args = parser.parse_args(argv)
    only = {"only": args.only} if args.only else {}
    result = run(
        quick=args.quick, seed=args.seed, threads=args.threads, recompute=args.recompute, cache=args.cache, **only
    )
    print(json.dumps(result, indent=None if args.json else 1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
