"""Faithfulness against exact Shapley values: every method on MiniLM similarity and on planted rationales.

Prints one JSON object. Same as ``attn-plugins bench faithful --json``; the committed result is
``benchmarks/results/faithful.json``, the exact values it reads ``benchmarks/results/faithful_exact.npz``.
Run:  python benchmarks/faithful.py [--quick] [--recompute] [--seed 0] [--threads 1]
"""

from __future__ import annotations

from attn_plugins.bench.faithful import main

if __name__ == "__main__":
    raise SystemExit(main())
