"""Planted-rationale benchmark: attention methods, shap Partition and a random baseline against known triggers.

Prints one JSON object (or a Markdown table with --table). Same as ``attn-plugins bench planted --json``.
Run:  python benchmarks/planted.py [--quick] [--seed 0] [--threads 1] [--table]
"""

from __future__ import annotations

from attn_plugins.bench.planted import main

if __name__ == "__main__":
    raise SystemExit(main())
