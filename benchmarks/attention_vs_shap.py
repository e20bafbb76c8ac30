"""Attention methods vs shap's Partition explainer on the same 100 texts: seconds per text, speed ratio, agreement.

Prints JSON. Same as ``attn-plugins bench cost --json``.
Run:  python benchmarks/attention_vs_shap.py [--quick] [--seed 0] [--threads 1]
"""

from __future__ import annotations

from attn_plugins.bench.cost import main

if __name__ == "__main__":
    raise SystemExit(main())
