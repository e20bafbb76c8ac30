"""Run the faithful benchmark's generation part alone and merge it into benchmarks/results/faithful.json.

The trained decoder classifier, cipher translation and lookup models (attn_plugins/bench/generation.py)
take a few minutes on one thread; the MiniLM part is left as committed. Then
``python benchmarks/faithful_table.py`` writes the tables.
Run:  python benchmarks/faithful_generation.py [--quick] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attn_plugins.bench import generation

RESULT = Path(__file__).resolve().parent / "results" / "faithful.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a test-sized run (printed, not merged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    part = generation.run(quick=args.quick, seed=args.seed, threads=args.threads)
    if args.quick:
        print(json.dumps(part, indent=1, default=float))
        return 0
    result = json.loads(RESULT.read_text(encoding="utf-8"))
    result["generation"] = part
    RESULT.write_text(json.dumps(result, indent=1, default=float) + "\n", encoding="utf-8")
    print(f"merged the generation part into {RESULT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
