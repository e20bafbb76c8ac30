"""Alignment benchmark: cross-attention AER of a tiny trained translator, per layer, head and method.

Prints one JSON object. Same as ``attn-plugins bench align --json``.
Run:  python benchmarks/align.py [--quick] [--seed 0] [--threads 1]
"""

from __future__ import annotations

from attn_plugins.bench.align import main

if __name__ == "__main__":
    raise SystemExit(main())
