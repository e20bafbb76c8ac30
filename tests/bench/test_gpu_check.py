"""scripts/gpu_check.py --quick on the CPU: one JSON, every check passed, each with its seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_quick_check_on_the_cpu_prints_one_passing_json():
    out = _run("--quick", "--device", "cpu")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["device"] == "cpu" and report["quick"] is True
    assert report["torch"] == torch.__version__ and "cuda" in report and report["device_name"]
    assert set(report["checks"]) == {"capture", "relevance", "batched_explain", "capture_bench"}
    for name, check in report["checks"].items():
        assert check["passed"] is True, (name, check)
        assert check["seconds"] >= 0 and check["rows"], name
    assert report["passed"] is True
    dtypes = {(r["model_type"], r["dtype"]) for r in report["checks"]["relevance"]["rows"]}
    assert {("llama", "float16"), ("bert", "bfloat16"), ("llama", "float32")} <= dtypes
    methods = {r["method"] for r in report["checks"]["relevance"]["rows"]}
    assert methods == {"attnlrp", "cplrp", "cplrp_mask"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_one_is_one_clear_error():
    out = _run("--quick", "--device", "cuda")
    assert out.returncode == 2
    assert "no CUDA device is available" in out.stderr and "Traceback" not in out.stderr
