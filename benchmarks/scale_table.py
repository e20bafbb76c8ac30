"""Write the throughput table of docs/scale.md from the JSON of `attn-plugins bench scale`.

    attn-plugins bench scale --json > benchmarks/results/scale.json
    python benchmarks/scale_table.py benchmarks/results/scale.json
Nothing in the table is typed by hand; tests/bench/test_scale.py checks the page against the JSON.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "scale.md"
START, END = "<!-- scale-table: written by benchmarks/scale_table.py -->", "<!-- /scale-table -->"


def table(data: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per configuration, then what was measured and under which load."""
    lines = [
        "| engine | workers | texts | whole run (s) | texts/s, whole run | explaining (s) | texts/s, explaining "
        "| texts/s per worker |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['engine']} | {r['workers']} | {r['texts']} | {r['wall_seconds']:.1f} | "
            f"{r['examples_per_second']:.1f} | {r['explaining_seconds']:.1f} | {r['explaining_examples_per_second']:.1f} "
            f"| {r['per_worker_examples_per_second']:.1f} |"
        )
    lines += [
        "",
        f"Ray with 2 workers explains {data['ray_2_over_1_explaining']:.2f}x as fast as with 1. "
        f"{data['model']}, method {data['method']}, {data['target']}; medians of {data['repeats']} interleaved "
        f"repeats on a {data['cpus']}-core machine shared with other jobs (median 1-minute load average "
        f"{data['load_average_median']}).",
    ]
    return lines


def write(data: dict[str, Any], doc: Path = DOC) -> None:
    """Replace the table between the markers of ``doc``."""
    text = doc.read_text(encoding="utf-8")
    block = "\n".join([START, *table(data), END])
    new, count = re.subn(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if count != 1:
        raise SystemExit(f"{doc}: the table markers are missing")
    doc.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    write(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    print(f"wrote the table of {DOC}")
