"""Peak memory at 2048 and 4096 tokens: full capture vs streaming reducers (one subprocess per configuration).

Prints JSON with the peak extra resident memory of each mode and the ratio full / stream.
Same as ``attn-plugins bench memory --json``.
Run:  python benchmarks/memory_long.py [--quick] [--seed 0]
"""

from __future__ import annotations

from attn_plugins.bench.memory import main

if __name__ == "__main__":
    raise SystemExit(main())
