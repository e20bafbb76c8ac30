"""Write docs/zoo.md's type × method table from benchmarks/results/zoo.json (nothing in it is typed by hand).

Run the benchmark, keep its JSON, then write the table:
    attn-plugins bench zoo --json > benchmarks/results/zoo.json
    python scripts/write_zoo_table.py
``--check`` only compares (exit 1 when the page differs); tests/bench/test_zoo.py checks the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attn_plugins.bench.zoo import with_docs_section

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Write (or with --check, compare) the table of docs/zoo.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "zoo.json"))
    parser.add_argument("--page", default=str(ROOT / "docs" / "zoo.md"))
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the page differs")
    args = parser.parse_args()
    result = json.loads(Path(args.results).read_text(encoding="utf-8"))
    page = Path(args.page).read_text(encoding="utf-8")
    updated = with_docs_section(page, result)
    if args.check:
        if updated != page:
            print("docs/zoo.md's table differs from the JSON; run python scripts/write_zoo_table.py")
            return 1
        return 0
    Path(args.page).write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
