"""Attention methods versus SHAP: cost and agreement on the same texts and the same target.

The packaged all-MiniLM-L6-v2 explains the cosine similarity of each text's embedding to a reference
sentence. :func:`attn_plugins.explain.compare` runs shap's Partition explainer (``Text`` masker, default budget of
500 evaluations) on each text, then every attention method on all the texts (captured in padded batches, as
``ap.explain`` does with many texts), in the same run; this benchmark reports the seconds per text of each, the speed ratio (shap time / method time)
and the rank agreement with shap (Spearman, Kendall, top-3 overlap) next to it.

``--model decoder`` and ``--model seq2seq`` run the same comparison on the trained decoder and
encoder-decoder of the faithful-generation benchmark (:mod:`attn_plugins.bench.generation`, trained here
with its fixed seed): the decoder's planted sentences explained at their predicted class word, the
encoder-decoder's cipher sentences at their first generated token. ``--learned PATH`` adds a learned
attributor (``ap.fit_attributor``'s file, for MiniLM) to the methods.
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


MODELS = ("minilm", "decoder", "seq2seq")


def subject(name: str, n: int, seed: int) -> tuple[Any, Any, list[str], list[str], dict[str, Any], str]:
    """(model, tokenizer, texts, warm-up texts, compare's target arguments, the model's description) of ``name``."""
    if name == "minilm":
        from .capture import minilm

        model, tokenizer = minilm()
        return model, tokenizer, texts(n, seed), texts(min(n, 32), seed + 1), {"target": REFERENCE}, MINILM
    if name not in ("decoder", "seq2seq"):
        raise ValueError(f"model must be one of {', '.join(MODELS)}, not {name!r}")
    from . import generation as G

    # The benchmark's models with its training settings; n + 32 held-out sentences: the texts and the warm-up.
    config = G.Config(n_eval=n + 32)
    trained = (G.decoder_planted if name == "decoder" else G.translation)(config, seed)
    tok = trained.tokenizer
    sentences = [tok.decode(t.inputs["input_ids"][0], skip_special_tokens=True) for t in trained.texts]
    what = (
        "the faithful-generation benchmark's trained 2-layer Llama (decoder_planted), explaining the predicted class word"
        if name == "decoder"
        else "the faithful-generation benchmark's trained 2+2-layer Marian (translation), explaining the first generated token"
    )
    # A translation the model got wrong is dropped by the benchmark: fewer sentences than asked may remain.
    return trained.model, tok, sentences[:n], sentences[n:] or sentences[:1], {"task": "next_token"}, what


MINILM = "all-MiniLM-L6-v2 (packaged)"


def run(
    quick: bool = False,
    seed: int = 0,
    threads: int = 1,
    n_texts: int = 100,
    model: str = "minilm",
    learned: str | None = None,
) -> dict[str, Any]:
    """Each attention method vs shap Partition on the same texts: seconds per text, speed ratio, agreement."""
    from ..explain.compare import compare

    n = 2 if quick else n_texts
    methods: list[Any] = list(("raw", "rollout") if quick else METHODS)
    if learned is not None:
        from ..methods.learned import LearnedAttributor

        methods.append(LearnedAttributor.load(learned))
    # The quick mode is a smoke test: a small shap budget; the full run uses shap's default (500).
    max_evals = 64 if quick else None
    with torch_threads(threads):
        hf, tokenizer, chosen, warm, target, described = subject(model, n, seed)
        # Warm-up on other texts, a whole batch of them: plugin loading, first-call initialization and the
        # first allocation of a batch's record memory are not any method's cost.
        compare(hf, tokenizer, warm, methods=methods, max_evals=16, **target)
        result = compare(hf, tokenizer, chosen, methods=methods, max_evals=max_evals, **target)
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
        "model_choice": model,
        "model": described,
        # A decoder's and an encoder-decoder's target is the task's own output (each text's predicted token).
        "target": data["target"]
        if data["target"] is not None
        else f"{data['task']}: the log-probability of each text's predicted token",
        "texts": len(chosen),
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
    parser.add_argument("--model", choices=MODELS, default="minilm", help="which model (default minilm)")
    parser.add_argument("--learned", help="a learned attributor file for MiniLM, added to the methods")
    args = parser.parse_args(argv)
    if args.texts < 1:
        parser.error("--texts must be at least 1")
    if args.learned is not None and args.model != "minilm":
        parser.error("--learned is a MiniLM attributor: use it with --model minilm")
    result = run(args.quick, args.seed, args.threads, args.texts, args.model, args.learned)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
