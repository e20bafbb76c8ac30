"""Attention methods versus SHAP: cost and agreement on the same texts and the same target.

The packaged all-MiniLM-L6-v2 explains the cosine similarity of each text's embedding to a reference
sentence. :func:`attn_plugins.explain.compare` runs shap's Partition explainer (``Text`` masker, default budget of
500 evaluations) on each text, then every attention method on all the texts (captured in padded batches, as
``ap.explain`` does with many texts), in the same run; this benchmark reports the seconds per text of each, the speed ratio (shap time / method time)
and the rank agreement with shap (Spearman, Kendall, top-3 overlap) next to it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from .command import bench_parser
from .threads import torch_threads

METHODS = ("raw", "rollout", "flow", "grad_attention", "gae", "norm", "alti", "attnlrp", "cplrp", "cplrp_mask")
REFERENCE = "A film about a family that moves to a new city."

_SUBJECTS = ["the movie", "this book", "the new phone", "our trip", "the concert", "his speech", "the restaurant"]
_SUBJECTS += ["the game", "her painting", "the lecture", "the city", "my family", "the weather", "the team"]
_VERBS = ["was", "felt", "seemed", "turned out", "looked", "sounded"]
_ADJECTIVES = ["wonderful", "boring", "too long", "surprisingly good", "a bit sad", "very loud", "quite calm"]
_ADJECTIVES += ["full of energy", "hard to follow", "better than expected", "a total mess", "warm and friendly"]
_TAILS = ["", " last night", " after the move", " for the whole family", " in the end", " despite the rain"]
_TAILS += [" to everyone we met", " on the first day"]


def texts(n: int = 100, seed: int = 0) -> list[str]:
    """``n`` distinct short English sentences built from fixed parts with a seeded generator."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_ADJECTIVES)}{rng.choice(_TAILS)}."
        s = s[0].upper() + s[1:]
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def run(quick: bool = False, seed: int = 0, threads: int = 1, n_texts: int = 100) -> dict[str, Any]:
    """Each attention method vs shap Partition on the same texts: seconds per text, speed ratio, agreement."""
    from ..explain.compare import compare
    from .capture import minilm

    n = 2 if quick else n_texts
    methods = ("raw", "rollout") if quick else METHODS
    # The quick mode is a smoke test: a small shap budget; the full run uses shap's default (500).
    max_evals = 64 if quick else None
    with torch_threads(threads):
        model, tokenizer = minilm()
        # Warm-up on other texts, a whole batch of them: plugin loading, first-call initialization and the
        # first allocation of a batch's record memory are not any method's cost.
        warm = texts(min(n, 32), seed + 1)
        compare(model, tokenizer, warm, methods=list(methods), target=REFERENCE, max_evals=16)
        result = compare(model, tokenizer, texts(n, seed), methods=list(methods), target=REFERENCE, max_evals=max_evals)
    data = result.to_dict()
    shap_seconds = data["reference_cost"]["seconds_per_text"]
    rows = []
    for row in data["methods"]:
        if row.get("error"):
            rows.append({"method": row["method"], "error": row["error"]})
            continue
        rows.append(
            {
                "method": row["method"],
                "seconds_per_text": round(row["seconds_per_text"], 5),
                "forward_passes_per_text": row["forward_passes_per_text"],
                "speedup_vs_shap": round(shap_seconds / row["seconds_per_text"], 1),
                "spearman": None if row["spearman"] is None else round(row["spearman"], 3),
                "kendall": None if row["kendall"] is None else round(row["kendall"], 3),
                "top_3": round(row["top_k"], 3),
            }
        )
    return {
        "benchmark": "attention_vs_shap",
        "quick": quick,
        "seed": seed,
        "threads": threads,
        "model": "all-MiniLM-L6-v2 (packaged)",
        "target": data["target"],
        "texts": n,
        "shap": {
            "explainer": "Partition, Text masker",
            "max_evals": data["max_evals"],
            "seconds_per_text": round(shap_seconds, 5),
            "forward_passes_per_text": data["reference_cost"]["forward_passes_per_text"],
            "masked_inputs_per_text": data["reference_cost"]["evaluations_per_text"],
        },
        "methods": rows,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser(
        "attn-plugins bench cost", __doc__.splitlines()[0], "2 texts, raw and rollout, shap budget 64"
    )
    parser.add_argument("--texts", type=int, default=100, help="how many texts (default 100)")
    args = parser.parse_args(argv)
    if args.texts < 1:
        parser.error("--texts must be at least 1")
    print(json.dumps(run(quick=args.quick, seed=args.seed, threads=args.threads, n_texts=args.texts), indent=2))


if __name__ == "__main__":
    main()
