"""Planted-rationale benchmark: the data generator, the summary statistics, and one quick run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from attn_plugins.bench import planted
from attn_plugins.bench.stats import mean_ci
from attn_plugins.bench.threads import torch_threads
from attn_plugins.errors import InputError
from attn_plugins.metrics import plausibility

ROOT = Path(__file__).resolve().parents[2]


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
    assert text.startswith("| method | token F1 ↑ | AUPRC ↑ |")
    rows = [line.split(" | ")[0].removeprefix("| ") for line in text.splitlines()[2:]]
    assert rows[-2:] == [f"shap Partition ({planted.Config.quick().shap_max_evals} evals)", "random"]
    named = {r.split(" (plugin ")[0] for r in rows[:-2]}
    assert named == set(quick["methods"]) - {"shap_partition", "random"}
    assert "max_attention (plugin attn-example-plugin)" in rows  # a plugin's method says where it comes from


def test_main_prints_json_or_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = {"methods": {"raw": {"token_f1": {"mean": 0.5, "ci95": [0.4, 0.6]}, "seconds_per_example": {"mean": 0.01}}}}
    monkeypatch.setattr(planted, "run", lambda **kw: fake)
    assert planted.main(["--quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == fake
    planted.main(["--table"])
    assert "| raw | 0.50 [0.40, 0.60] |" in capsys.readouterr().out


def _predict(ids: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-(np.asarray(ids) % 7).mean(-1)))
    return np.stack([1 - p, p], -1)


def test_token_f1_rewards_scores_that_rank_the_rationale_first() -> None:
    """Perfect scores give F1 1, reversed (or negated) ones F1 0, on an asymmetric rationale."""
    ids = np.array([2, 10, 11, 12, 13, 14, 15, 3])
    # Asymmetric on purpose: a reversed score vector must not land on the rationale again.
    rationale = np.array([False, True, True, False, False, False, False, False])
    protected = np.array([True, False, False, False, False, False, False, True])
    perfect = np.where(rationale, 1.0, 0.0) + np.linspace(0, 0.01, len(ids))
    good = planted.score_example(perfect, ids, rationale, protected, 1, _predict, 4)
    assert good["token_f1"] == pytest.approx(1.0)
    assert good["auprc"] == pytest.approx(1.0)
    assert good["iou_f1"] == pytest.approx(1.0)
    assert good["token_f1"] == pytest.approx(plausibility.token_f1(perfect, rationale, protected=protected))
    for bad in (-perfect, perfect[::-1].copy()):
        assert planted.score_example(bad, ids, rationale, protected, 1, _predict, 4)["token_f1"] == pytest.approx(0.0)


# ---------------------------------------------------------------------------- the published results
PUBLISHED = json.loads((ROOT / "benchmarks" / "results" / "planted.json").read_text(encoding="utf-8"))


def test_readme_table_is_the_one_generated_from_the_published_json() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert planted.with_readme_section(readme, PUBLISHED) == readme, "run python scripts/write_planted_table.py"
    assert planted.table(PUBLISHED) in readme


def test_published_json_is_of_the_current_benchmark() -> None:
    assert PUBLISHED["config"] == planted.Config().__dict__
    assert PUBLISHED["quick"] is False and not PUBLISHED["errors"]
    from attn_plugins.plugins import get_registry

    assert set(get_registry().names("method")) | {"shap_partition", "random"} == set(PUBLISHED["methods"])
    for metrics in PUBLISHED["methods"].values():
        assert set(metrics) >= {*planted.METRICS, "seconds_per_example"}


@pytest.fixture(scope="module")
def published_setup() -> planted.Setup:
    """The classifier of the published run, trained again from its configuration and seed."""
    with torch_threads(1):
        return planted.prepare(planted.Config(**PUBLISHED["config"]), PUBLISHED["seed"])


def within_published(reproduced: dict, published: dict) -> bool:
    """A reproduced mean agrees with a published one when it lies in the published 95% bootstrap interval.

    Training again under other library versions moves single examples (raw token F1 0.945 against 0.95
    with transformers 5.25); the interval is the published statement of how far such noise goes. An
    interval with no spread allows the 4-decimal rounding of the published figures.
    """
    low, high = published["ci95"]
    slack = 5e-5 if high - low < 1e-4 else 0.0
    return reproduced["n"] == published["n"] and low - slack <= reproduced["mean"] <= high + slack


def test_within_published_is_the_interval() -> None:
    pub = {"mean": 0.95, "ci95": [0.92, 0.975], "n": 100}
    assert within_published({"mean": 0.945, "ci95": [0.9, 0.97], "n": 100}, pub)
    assert not within_published({"mean": 0.91, "ci95": [0.88, 0.94], "n": 100}, pub)
    assert not within_published({"mean": 0.98, "ci95": [0.96, 0.99], "n": 100}, pub)
    assert not within_published({"mean": 0.95, "ci95": [0.92, 0.975], "n": 99}, pub)
    assert within_published({"mean": 0.0, "ci95": [0.0, 0.0], "n": 5}, {"mean": 0.0, "ci95": [-0.0, 0.0], "n": 5})


def test_published_results_reproduce(published_setup: planted.Setup) -> None:
    """Training again gives the published classifier, and each plausibility figure lies in its published interval."""
    setup = published_setup
    # Accuracy on the 100 evaluation texts: at most two texts may change with other library versions.
    assert abs(setup.accuracy - PUBLISHED["model"]["test_accuracy"]) <= 0.02
    seed, n_resamples = PUBLISHED["seed"], PUBLISHED["config"]["n_resamples"]
    scorers = planted.scorers(setup, seed)
    for name in ("raw", "rollout", "random"):
        with torch_threads(1):
            values, _ = planted.evaluate(name, scorers[name], setup, faithful=False)
        for metric, v in values.items():
            got = mean_ci(v, seed, n_resamples)
            assert within_published(got, PUBLISHED["methods"][name][metric]), (name, metric, got)


def test_shap_and_rollout_beat_random_on_the_planted_task(published_setup: planted.Setup) -> None:
    """What a correct pipeline must give on a task with known answers: the planted words ranked first."""
    setup = planted.Setup(**{**published_setup.__dict__, "eval_data": published_setup.eval_data[:12]})
    scorers = planted.scorers(setup, 0)
    with torch_threads(1):
        f1 = {
            n: np.mean(planted.evaluate(n, scorers[n], setup, faithful=False)[0]["token_f1"])
            for n in scorers
            if n in ("shap_partition", "rollout", "random")
        }
    assert f1["shap_partition"] >= 0.9 and f1["rollout"] >= 0.8
    assert f1["random"] < 0.5
