"""Planted-rationale benchmark: the data generator, the summary statistics, and one quick run."""

from __future__ import annotations

import json
import random

import pytest

from attn_plugins.bench import planted
from attn_plugins.bench.stats import mean_ci
from attn_plugins.errors import InputError


def test_examples_plant_same_class_triggers() -> None:
    data = planted.make_examples(60, random.Random(0))
    for ex in data:
        planted_words = [w for w, p in zip(ex.words, ex.planted) if p]
        if ex.label == 2:  # neutral: no trigger at all
            assert planted_words == []
        else:
            assert 1 <= len(planted_words) <= 2
            assert all(w in planted.TRIGGERS[ex.label] for w in planted_words)
        assert all(w in planted.DISTRACTORS for w, p in zip(ex.words, ex.planted) if not p)
    assert {ex.label for ex in data} == {0, 1, 2}
    assert {ex.label for ex in planted.make_examples(30, random.Random(0), neutral=False)} == {0, 1}


def test_mean_ci_uses_the_bootstrap() -> None:
    out = mean_ci([0.0, 1.0] * 10, seed=0)
    assert out["mean"] == 0.5 and out["n"] == 20
    assert 0.2 < out["ci95"][0] < 0.5 < out["ci95"][1] < 0.8
    assert mean_ci([2.0, 2.0]) == {"mean": 2.0, "ci95": [2.0, 2.0], "n": 2}
    with pytest.raises(InputError, match="NaN"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(InputError, match="non-empty"):
        mean_ci([])


@pytest.fixture(scope="module")
def quick() -> dict:
    return planted.run(quick=True, seed=0)


def test_quick_run_scores_methods_shap_and_random(quick: dict) -> None:
    json.dumps(quick)
    methods = quick["methods"]
    assert {"raw", "rollout", "shap_partition", "random"} <= set(methods)
    n = planted.Config.quick().n_eval
    for name, metrics in methods.items():
        for metric in (*planted.METRICS, "seconds_per_example"):
            m = metrics[metric]
            assert m["n"] == n, (name, metric)
            assert m["ci95"][0] <= m["mean"] <= m["ci95"][1]
        assert 0 <= metrics["token_f1"]["mean"] <= 1 and 0 <= metrics["auprc"]["mean"] <= 1
    assert "spearman_vs_shap" not in methods["shap_partition"]
    assert "spearman_vs_shap" in methods["random"]
    assert set(quick["higher_is_better"]) >= set(planted.METRICS)


def test_table_renders_every_method(quick: dict) -> None:
    text = planted.table(quick)
    assert text.startswith("| method | token_f1")
    for name in quick["methods"]:
        assert f"| {name} |" in text


def test_main_prints_json_or_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = {"methods": {"raw": {"token_f1": {"mean": 0.5, "ci95": [0.4, 0.6]}, "seconds_per_example": {"mean": 0.01}}}}
    monkeypatch.setattr(planted, "run", lambda **kw: fake)
    assert planted.main(["--quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == fake
    planted.main(["--table"])
    assert "| raw | 0.50 [0.40, 0.60] |" in capsys.readouterr().out
