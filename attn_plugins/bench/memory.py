"""Peak memory for long inputs: a full capture (all layers of L·H·N² weights) vs streaming reducers (one layer).

Each configuration runs in a fresh subprocess, so one measurement's allocations never hide another's:
the child builds a tiny long-context decoder, notes its resident memory, runs one forward (plain,
full capture, or streaming rollout + per-head entropy + top-k) and reports the peak resident set
(``ru_maxrss``) above that baseline. Torch allocates on the CPU with malloc, which tracemalloc does not
see; the resident set does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import torch

MODES = ("plain", "full", "stream")
LENGTHS = (2048, 4096)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def measure_one(mode: str, tokens: int, seed: int = 0, layers: int = 4, hidden: int = 64) -> dict[str, Any]:
    """Run one configuration in this process and return its peak memory above the pre-forward baseline."""
    from .capture import random_inputs, tiny_decoder

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    torch.set_num_threads(1)
    model = tiny_decoder(seed, max_positions=max(tokens, 4096), hidden=hidden, layers=layers)
    inputs = random_inputs(model.config.vocab_size, 1, tokens, seed)
    # Warm-up on a short input: imports, the plugin registry and lazy initialization are paid here,
    # not counted as the forward's memory.
    _forward(mode, model, random_inputs(model.config.vocab_size, 1, 8, seed))
    before = _rss_bytes()
    peak_before = _maxrss_bytes()
    kept = _forward(mode, model, inputs)
    peak = _maxrss_bytes()
    heads = model.config.num_attention_heads
    return {
        "mode": mode,
        "tokens": tokens,
        "layers": layers,
        "heads": heads,
        "baseline_mb": round(before / 2**20, 1),
        "peak_extra_mb": round((peak - before) / 2**20, 1),
        # If the process peaked higher before the forward, the forward's own peak is hidden below it.
        "peak_before_forward_mb": round(peak_before / 2**20, 1),
        "result_mb": round(kept / 2**20, 1),
        "one_layer_weights_mb": round(heads * tokens * tokens * 4 / 2**20, 1),
        "all_layers_weights_mb": round(layers * heads * tokens * tokens * 4 / 2**20, 1),
    }


def _forward(mode: str, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """One forward in ``mode``; returns the bytes of what it keeps (the records' weights or the reduced results)."""
    from ..capture import HeadEntropy, RolloutReducer, TopK, capture, stream

    with torch.no_grad():
        if mode == "plain":
            model(**inputs)
            return 0
        if mode == "full":
            record = capture(model, inputs=inputs)
            return sum(t.numel() * t.element_size() for t in record.attentions.values())
        results = stream(model, inputs=inputs, reducers=[RolloutReducer(), HeadEntropy(), TopK(8)])
        return int(results[0].results["rollout"]["self"].nbytes)


def _child(mode: str, tokens: int, seed: int, layers: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "attn_plugins.bench.memory", "--one", mode, str(tokens), str(seed), str(layers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {mode}/{tokens} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Peak extra memory of plain, full-capture and streaming forwards at each length; ratio full / stream."""
    lengths: Sequence[int] = (256,) if quick else LENGTHS
    layers = 2 if quick else 4
    rows = []
    for tokens in lengths:
        # The quick mode (a smoke test) leaves out the plain forward to spend one subprocess less.
        modes = MODES[1:] if quick else MODES
        by_mode = {mode: _child(mode, tokens, seed, layers) for mode in modes}
        rows.append(
            {
                "tokens": tokens,
                **{f"{m}_peak_extra_mb": by_mode[m]["peak_extra_mb"] for m in modes},
                "full_over_stream": round(
                    by_mode["full"]["peak_extra_mb"] / max(by_mode["stream"]["peak_extra_mb"], 0.1), 2
                ),
                "one_layer_weights_mb": by_mode["full"]["one_layer_weights_mb"],
                "all_layers_weights_mb": by_mode["full"]["all_layers_weights_mb"],
                "details": by_mode,
            }
        )
    return {
        "benchmark": "memory_long",
        "quick": quick,
        "seed": seed,
        "model": f"tiny llama, {layers} layers, 8 heads (4 kv), hidden 64",
        "measure": "ru_maxrss of a fresh subprocess minus its resident memory before the forward",
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the benchmark's JSON (``--one MODE TOKENS SEED LAYERS`` runs one child)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 tokens, 2 layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", nargs=4, metavar=("MODE", "TOKENS", "SEED", "LAYERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        mode, tokens, seed, layers = args.one
        print(json.dumps(measure_one(mode, int(tokens), int(seed), int(layers))))
        return
    print(json.dumps(run(quick=args.quick, seed=args.seed), indent=2))


if __name__ == "__main__":
    main()
