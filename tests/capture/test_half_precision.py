"""Capture and the relevance methods on float16/bfloat16 models (the CPU runs both), against float32 and eager.

Tolerances are in units of the dtype's eps, from the differences measured over the zoo (scripts/gpu_check.py
holds the same constants and the measured maxima).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins.methods import get_method
from attn_plugins.methods.lrp import RULES, budget
from attn_plugins.zoo import tiny_inputs, verify_capture

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import gpu_check

HALF = [torch.float16, torch.bfloat16]


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("model_type", ["llama", "bert", "t5", "mpnet", "bloom"])
def test_half_precision_capture_matches_eager(model_type, dtype):
    """mpnet and bloom go through the eager fallback: their half weights' rows sum to 1 only to half precision."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = verify_capture(model_type, dtype=dtype)  # validates every record
    assert r["dtype"] == str(dtype).removeprefix("torch.")
    assert r["max_attention_diff"] <= gpu_check.ATTENTION_EPS * _eps(dtype)
    assert r["max_output_diff"] <= gpu_check.OUTPUT_EPS * _eps(dtype)


def test_a_float32_record_of_float32_weights_keeps_the_float32_tolerance():
    """The half-precision allowance applies only where the weights were computed in half precision."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = gpu_check._text_model("mpnet", torch.device("cpu"), torch.float32)[0]
    record = ap.capture(model, inputs=tiny_inputs(model, batch=1))
    assert record.meta["weights_dtype"] == "float32"
    record.attentions["self"][0, 0, 0] *= 1.01  # one row off by ~1e-2: caught at float32's 1e-4
    with pytest.raises(ap.RecordValidationError, match="sum to 1"):
        record.validate()


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("model_type", ["llama", "bert", "t5"])
def test_relevance_in_half_precision_agrees_with_float32(model_type, dtype):
    """attnlrp, cplrp and cplrp_mask of the half model vs the float32 model; the budget closes to the dtype's eps."""
    name = str(dtype).removeprefix("torch.")
    for method_name in ("attnlrp", "cplrp", "cplrp_mask"):
        method = get_method(method_name)
        scores = {}
        for dt in (torch.float32, dtype):
            model, tok, family = gpu_check._text_model(model_type, torch.device("cpu"), dt)
            rec = method.capture(model, tok, gpu_check.TEXTS[0], gradient_target=gpu_check._target(family))
            scores[dt] = np.asarray(ap.attribute(rec, method_name), dtype=np.float64)
        ref = scores[torch.float32]
        assert np.isfinite(scores[dtype]).all() and np.abs(ref).max() > 0
        rel = np.abs(scores[dtype] - ref).max() / np.abs(ref).max()
        assert rel <= gpu_check.RELEVANCE_EPS[name] * _eps(dtype), (method_name, rel)
        if method.baseline is None:
            b = budget(model, tiny_inputs(model, batch=1, length=7), gpu_check._target(family), RULES[method.rule])
            assert abs(b["residual"]) <= gpu_check.BUDGET_EPS[name] * _eps(dtype) * abs(b["f"]), (method_name, b)
