"""Write README.md's planted-rationale table from benchmarks/results/planted.json (nothing in it is typed by hand).

Run the benchmark, keep its JSON, then write the table:
    attn-plugins bench planted > benchmarks/results/planted.json
    python scripts/write_planted_table.py
``--check`` only compares (exit 1 when README.md differs); tests/bench/test_planted.py checks the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attn_plugins.bench.planted import with_readme_section

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Write (or with --check, compare) the README section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "planted.json"))
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the README differs")
    args = parser.parse_args()
    result = json.loads(Path(args.results).read_text(encoding="utf-8"))
    readme = Path(args.readme).read_text(encoding="utf-8")
    updated = with_readme_section(readme, result)
    if args.check:
        if updated != readme:
            print("README.md's planted section differs from the JSON; run python scripts/write_planted_table.py")
            return 1
        return 0
    Path(args.readme).write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
