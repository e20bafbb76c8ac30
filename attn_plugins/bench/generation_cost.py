"""Cost of explaining a generation: every generated token explained with relevance, against a plain generation.

A Llama-type decoder (random init, seeded) generates ``tokens`` tokens greedily with its KV cache. The
explanation of every one of them (``ap.explain(..., max_new_tokens=tokens)`` with the default method,
the most faithful one that supports the model: one generation, one teacher-forced forward over prompt and
generation, one modified backward per token) is timed against the budget of the faithful-generation
issue: 2 × the plain generation + one plain backward per token, a backward timed as (forward + backward)
− forward of log p(token) on the teacher-forced sequence. Medians of ``repeats`` runs, after a warm-up.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from .command import bench_parser
from .threads import torch_threads

PROMPT = "the old man went to the city by car and saw a big house and the house was new"


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first-call allocation and dispatch are nobody's cost
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False, seed: int = 0, threads: int = 1, tokens: int = 32, repeats: int = 5) -> dict[str, Any]:
    """Seconds of a plain generation, a plain backward, and the explanation of every generated token."""
    import torch

    import attn_plugins as ap

    from ..explain.targets import resolve
    from ..zoo import tiny_model, tiny_tokenizer, tiny_vocab

    size = {} if quick else {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4}
    tokens = 4 if quick else tokens
    repeats = 1 if quick else repeats
    with torch_threads(threads):
        tok = tiny_tokenizer("gpt")
        model = tiny_model("llama", seed=seed, vocab_size=len(tiny_vocab("gpt")), max_position_embeddings=128, **size)
        enc = tok(PROMPT, return_tensors="pt")

        def generate() -> Any:
            with torch.no_grad():
                return model.generate(**enc, max_new_tokens=tokens, do_sample=False, pad_token_id=tok.eos_token_id)

        spec = resolve(model, tok, PROMPT, max_new_tokens=tokens)
        last = spec.gradient_targets[-1]

        def forward() -> Any:
            with torch.no_grad():
                return model(**spec.inputs)

        def forward_backward() -> None:
            model.zero_grad(set_to_none=True)
            last(model(**spec.inputs)).backward()

        explainer = ap.AttentionExplainer(model, tok, max_new_tokens=tokens)
        seconds = {
            "generation": _median_seconds(generate, repeats),
            "forward": _median_seconds(forward, repeats),
            "forward_backward": _median_seconds(forward_backward, repeats),
            "explanation": _median_seconds(lambda: explainer(PROMPT), repeats),
        }
        model.zero_grad(set_to_none=True)
    backward = max(seconds["forward_backward"] - seconds["forward"], 0.0)
    generated = len(spec.meta["generated_ids"])
    budget = 2 * seconds["generation"] + generated * backward
    return {
        "benchmark": "generation_cost",
        "quick": quick,
        "seed": seed,
        "threads": threads,
        "model": f"llama, random init ({sum(p.numel() for p in model.parameters())} parameters)",
        "method": explainer.method_name,
        "prompt_tokens": int(enc["input_ids"].shape[1]),
        "generated_tokens": generated,
        "repeats": repeats,
        "seconds": {k: round(v, 5) for k, v in seconds.items()} | {"backward": round(backward, 5)},
        "budget_seconds": round(budget, 5),
        "explanation_over_budget": round(seconds["explanation"] / budget, 3),
        "explanation_over_generation": round(seconds["explanation"] / seconds["generation"], 2),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser(
        "attn-plugins bench generation_cost", __doc__.splitlines()[0], "the zoo's tiny Llama, 4 tokens"
    )
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens (default 32)")
    args = parser.parse_args(argv)
    if args.tokens < 1:
        parser.error("--tokens must be at least 1")
    print(json.dumps(run(quick=args.quick, seed=args.seed, threads=args.threads, tokens=args.tokens), indent=2))


if __name__ == "__main__":
    main()
