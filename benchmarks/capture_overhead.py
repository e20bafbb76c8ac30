"""Capture overhead: plain forward (default backend) vs ap.capture vs eager output_attentions, side by side.

MiniLM (packaged) and a tiny random-init Llama at 32/128/512 tokens, batch 1 and 8; medians and ratios as JSON.
Same as ``attn-plugins bench capture --json``.
Run:  python benchmarks/capture_overhead.py [--quick] [--seed 0] [--threads 1]
"""

from __future__ import annotations

from attn_plugins.bench.capture import main

if __name__ == "__main__":
    raise SystemExit(main())
