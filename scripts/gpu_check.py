"""Device check: capture, the relevance methods in float32/float16/bfloat16, batched explaining, capture speed.

Runs on whatever device is present (CUDA if available, else the CPU; ``--device`` picks) and prints ONE
JSON: the device, the torch and CUDA versions, and per check whether it passed, its figures and seconds.
Sized to finish in under 8 minutes on a GPU; ``--quick`` (four zoo types, fewer dtypes, the benchmark's
quick form) runs on the CPU in CI in seconds. Exit status 0 when every check passed, 1 otherwise.

Run:  python scripts/gpu_check.py [--device cuda|cpu] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RELEVANCE_TYPES = ("llama", "gpt2", "bert", "t5")
METHODS = ("attnlrp", "cplrp", "cplrp_mask")
TEXTS = ["the movie was good", "a bad film", "the cast was great and the plot was fine"]

# Tolerances in units of the dtype's eps (float32 1.2e-7, float16 9.8e-4, bfloat16 7.8e-3), from the largest
# differences measured over the zoo on the CPU (the maxima are in the comments). Capture: captured weights vs
# eager in the same dtype, whose logits are rounded to it (t5's unscaled logits lose the most), and the
# output vs a forward without capture. Relevance: a half-precision model vs the same model in float32;
# the budget: |f - (tokens + sinks + leaks)| / |f|.
ATTENTION_EPS = 32  # measured at most 4.5 (float32), 20 (float16) and 21 (bfloat16), all t5 but float32's falcon
OUTPUT_EPS = 64  # measured at most 32 (t5, float32), 12 and 16
RELEVANCE_EPS = {"float16": 128, "bfloat16": 32}  # measured at most 71 (t5, float16) and 23 (t5, bfloat16)
BUDGET_EPS = {"float32": 64, "float16": 8, "bfloat16": 8}  # measured at most 3.9, 0.4 and 1.2
BATCH_EPS = {"float32": 64, "float16": 64, "bfloat16": 64}  # measured at most 5.6 (gpt2, float32); 0 in half


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of ``dtype``."""
    return float(torch.finfo(dtype).eps)


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one check: its figures, ``passed`` and seconds; an exception fails the check with its message."""
    start = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # a failing check is reported, the others still run
        out = {"passed": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=4)}
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def check_capture(device: torch.device, types: list[str], dtypes: list[str]) -> dict[str, Any]:
    """verify_capture of each zoo type and dtype on the device: captured weights vs eager, output vs plain."""
    from attn_plugins.zoo import verify_capture

    rows = []
    for model_type in types:
        for name in dtypes:
            dtype = DTYPES[name]
            try:
                r = verify_capture(model_type, device=device, dtype=dtype)
            except Exception as e:  # one type's failure is a failed row, not a lost matrix
                rows.append(
                    {"model_type": model_type, "dtype": name, "passed": False, "error": f"{type(e).__name__}: {e}"}
                )
                continue
            ok_att = r["max_attention_diff"] <= ATTENTION_EPS * eps(dtype)
            ok_out = r["max_output_diff"] <= OUTPUT_EPS * eps(dtype)
            rows.append(
                {
                    "model_type": model_type,
                    "dtype": name,
                    "backend": r["backend"],
                    "max_attention_diff": r["max_attention_diff"],
                    "max_output_diff": r["max_output_diff"],
                    "passed": bool(ok_att and ok_out),
                }
            )
    return {"passed": all(r["passed"] for r in rows), "rows": rows}


def _text_model(model_type: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any, str]:
    """A zoo model paired with the tiny tokenizer of its family, on ``device`` in ``dtype``."""
    from attn_plugins.zoo import ZOO, tiny_model, tiny_tokenizer, tiny_vocab

    family = ZOO[model_type][0]
    style = {"decoder": "gpt", "seq2seq": "seq2seq"}.get(family, "bert")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tiny_model(model_type, vocab_size=len(tiny_vocab(style)))
    return model.to(device=device, dtype=dtype), tiny_tokenizer(style), family


def _target(family: str) -> Callable[[Any], torch.Tensor]:
    """A logit of the last position (decoders, encoder-decoders) or one hidden unit of the first token."""
    return (lambda o: o.logits[0, -1, 5]) if family != "encoder" else (lambda o: o.last_hidden_state[0, 0, 0])


def check_relevance(device: torch.device, types: list[str], dtypes: list[str]) -> dict[str, Any]:
    """attnlrp, cplrp, cplrp_mask per type and dtype: agreement with float32 and the closing relevance budget."""
    import attn_plugins as ap
    from attn_plugins.methods import get_method
    from attn_plugins.methods.lrp import RULES, budget
    from attn_plugins.zoo import tiny_inputs

    rows = []
    for model_type in types:
        reference: dict[str, np.ndarray] = {}
        for name in ["float32"] + [d for d in dtypes if d != "float32"]:
            dtype = DTYPES[name]
            model, tok, family = _text_model(model_type, device, dtype)
            inputs = {k: v.to(device) for k, v in tiny_inputs(model, batch=1, length=7).items()}
            for method_name in METHODS:
                row: dict[str, Any] = {"model_type": model_type, "dtype": name, "method": method_name}
                try:
                    method = get_method(method_name)
                    rec = method.capture(model, tok, TEXTS[0], gradient_target=_target(family))
                    scores = np.asarray(ap.attribute(rec, method_name), dtype=np.float64)
                    if name == "float32":
                        reference[method_name] = scores
                    ref = reference[method_name]
                    scale = float(np.abs(ref).max()) or 1.0
                    row["max_rel_diff_vs_float32"] = float(np.abs(scores - ref).max() / scale)
                    ok = bool(np.isfinite(scores).all()) and row["max_rel_diff_vs_float32"] <= (
                        0.0 if name == "float32" else RELEVANCE_EPS[name] * eps(dtype)
                    )
                    if method.baseline is None:  # the budget: tokens + sinks + leaks = f
                        b = budget(model, inputs, _target(family), RULES[method.rule])
                        row["budget_residual"] = abs(b["residual"]) / max(abs(b["f"]), 1e-12)
                        ok = ok and row["budget_residual"] <= BUDGET_EPS[name] * eps(dtype)
                    row["passed"] = ok
                except Exception as e:  # one row's failure is reported, the matrix goes on
                    row.update(passed=False, error=f"{type(e).__name__}: {e}")
                rows.append(row)
    return {"passed": all(r["passed"] for r in rows), "rows": rows}


def check_batched_explain(device: torch.device, types: list[str], dtypes: list[str]) -> dict[str, Any]:
    """ap.explain over a list of texts (the default method) equals explaining each text alone."""
    import attn_plugins as ap

    rows = []
    for model_type in types:
        for name in dtypes:
            dtype = DTYPES[name]
            row: dict[str, Any] = {"model_type": model_type, "dtype": name}
            try:
                model, tok, _ = _text_model(model_type, device, dtype)
                batch = ap.explain(model, tok, TEXTS)
                alone = [ap.explain(model, tok, [t])[0].values for t in TEXTS]
                diffs = []
                for i, single in enumerate(alone):
                    a, b = np.asarray(batch[i].values, dtype=np.float64), np.asarray(single, dtype=np.float64)
                    diffs.append(float(np.abs(a - b).max() / (np.abs(b).max() or 1.0)))
                row["target"] = batch.output_names if isinstance(batch.output_names, str) else None
                row["max_rel_diff_batch_vs_alone"] = max(diffs)
                row["passed"] = max(diffs) <= BATCH_EPS[name] * eps(dtype)
            except Exception as e:
                row.update(passed=False, error=f"{type(e).__name__}: {e}")
            rows.append(row)
    return {"passed": all(r["passed"] for r in rows), "rows": rows}


def check_capture_bench(device: torch.device, quick: bool) -> dict[str, Any]:
    """The capture-overhead benchmark (attn_plugins.bench.capture) on the device; its goals are reported, not judged."""
    from attn_plugins.bench.capture import run

    out = run(quick=quick, device=device)
    rows = [
        {k: r[k] for k in ("model", "backend", "tokens", "batch", "median_s", "capture_vs_plain", "capture_vs_eager")}
        for r in out["rows"]
    ]
    # Passed: it ran and every timing is a real number; speed goals are the benchmark's to state, not a pass.
    ok = bool(rows) and all(v > 0 for r in rows for v in r["median_s"].values())
    return {"passed": ok, "rows": rows, "goals": out["goals"]}


def main(argv: list[str] | None = None) -> int:
    """Run every check on the device and print one JSON; exit status 1 if a check failed."""
    from attn_plugins.zoo import zoo_types

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="a subset that runs on the CPU in CI")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    quick = args.quick
    start = time.perf_counter()
    capture_types = list(RELEVANCE_TYPES) if quick else zoo_types()
    all_dtypes = list(DTYPES)
    checks = {
        "capture": timed(
            lambda: check_capture(device, capture_types, ["float32", "bfloat16"] if quick else all_dtypes)
        ),
        "relevance": timed(
            lambda: check_relevance(device, ["llama", "bert"] if quick else list(RELEVANCE_TYPES), all_dtypes)
        ),
        "batched_explain": timed(
            lambda: check_batched_explain(
                device, ["bert"] if quick else ["bert", "llama"], ["float32"] if quick else all_dtypes
            )
        ),
        "capture_bench": timed(lambda: check_capture_bench(device, quick or device.type != "cuda")),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    report = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": quick,
        "checks": checks,
        "passed": all(c["passed"] for c in checks.values()),
        "seconds": round(time.perf_counter() - start, 3),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
