"""attnlrp equals lxt 2.1's AttnLRP on every family lxt has rules for (benchmarks/results/lxt_attnlrp_zoo.npz).

The file is written by scripts/compare_lxt.py in lxt's own virtual environment; this test rebuilds the same
tiny models here (the script's ``build``; the weight fingerprints must match) and compares token relevances
at lxt's readout (``inputs_embeds``: our part ``word``; ViT: the patch embeddings) and the explained value.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from attn_plugins.methods.lrp import lrp

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "lxt_attnlrp_zoo"
# The goal. Measured: GPT-2 and BERT agree exactly (0.0); the rest to 1e-8..4e-7, the float32 steps
# of the reference run: lxt's RMSNorm rule computes in float32 (Llama, Qwen2/3), so do Gemma-3's RMSNorm and
# the eager attention functions lxt wraps (softmax in float32: ViT 1.2e-8), where ours runs sdpa in float64.
RTOL = 1e-5
VALUE_RTOL = 1e-6  # the explained values: up to 3.6e-7 apart (Qwen3), the same float32 steps


def _script():
    spec = importlib.util.spec_from_file_location("compare_lxt", ROOT / "scripts" / "compare_lxt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


def ours(family: str) -> tuple[np.ndarray, float]:
    """Our attnlrp relevance at lxt's readout, and the explained value."""
    model = SCRIPT.build(family)
    fp = SCRIPT.fingerprint(model)
    with np.load(RESULTS.with_suffix(".npz")) as lxt:
        assert fp == pytest.approx(float(lxt[f"fingerprint_{family}"]), rel=1e-12), "not the weights lxt explained"
    x = SCRIPT.inputs(model)
    r = lrp(model, x, SCRIPT.target(model), "uniform")
    part = r.parts["patches"][1:] if "pixel_values" in x else r.parts["word"]  # (ViT: position 0 is the class token)
    return part.numpy(), r.value


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| relative to the largest |b| (the scale of the relevances)."""
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("family", SCRIPT.FAMILIES)
def test_attnlrp_equals_lxt(family):
    rel, value = ours(family)
    with np.load(RESULTS.with_suffix(".npz")) as lxt:
        expected, f = lxt[f"rel_{family}"], float(lxt[f"f_{family}"])
    assert rel.shape == expected.shape
    assert value == pytest.approx(f, rel=VALUE_RTOL)
    assert relative_difference(rel, expected) <= RTOL


def test_the_reference_file_says_how_lxt_was_run():
    meta = json.loads(RESULTS.with_suffix(".json").read_text())
    assert meta["versions"]["lxt"] == "2.1"
    assert set(meta["families"]) == set(SCRIPT.FAMILIES)
    for entry in meta["families"].values():
        assert entry["how"] and entry["lxt_monkey_patch"]


def test_a_wrong_rule_is_seen():
    """The comparison is sharp: the A·V product without the uniform rule differs from lxt by far more than RTOL."""
    model = SCRIPT.build("llama")
    x = SCRIPT.inputs(model)
    r = lrp(model, x, SCRIPT.target(model), "detached")  # CP-LRP: another attention rule
    with np.load(RESULTS.with_suffix(".npz")) as lxt:
        assert relative_difference(r.parts["word"].numpy(), lxt["rel_llama"]) > 100 * RTOL
