"""Write attn_plugins/explain/method_ranking.json (the default method's ranking) from benchmarks/results/faithful.json.

tests/explain/test_defaults.py checks that the packaged file equals what this script makes.

Run:  python scripts/write_method_ranking.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "faithful.json"
OUT = ROOT / "attn_plugins" / "explain" / "method_ranking.json"


def main() -> int:
    from attn_plugins.explain.defaults import ranking_from_benchmark

    data = ranking_from_benchmark(json.loads(RESULT.read_text(encoding="utf-8")))
    OUT.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {', '.join(r['method'] for r in data['ranking'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
