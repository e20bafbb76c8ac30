"""attn-plugins bench generation_cost: the explanation of every generated token timed against a plain generation."""

from __future__ import annotations

import json

import pytest

from attn_plugins.bench import generation_cost
from attn_plugins.cli import main as cli_main


def test_generation_cost_quick(capsys: pytest.CaptureFixture) -> None:
    generation_cost.main(["--quick"])
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "generation_cost" and out["method"] == "cplrp_mask"  # the default method
    assert out["generated_tokens"] == 4
    s = out["seconds"]
    assert all(s[k] > 0 for k in ("generation", "forward", "forward_backward", "explanation"))
    # the budget is 2 x the generation + one backward per generated token, and the ratio is against it
    assert out["budget_seconds"] == pytest.approx(2 * s["generation"] + 4 * s["backward"], abs=1e-4)
    assert out["explanation_over_budget"] == pytest.approx(s["explanation"] / out["budget_seconds"], abs=2e-3)


def test_the_cli_runs_it(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["bench", "generation_cost", "--quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["benchmark"] == "generation_cost"
