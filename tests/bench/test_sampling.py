"""Sampling-estimator benchmark: the scoring of one case by hand, the CLI, the docs table equals the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from attn_plugins.bench import sampling
from attn_plugins.bench.exact import text_masker
from attn_plugins.explain.maskers import coalition_strings, shapley_values
from attn_plugins.zoo import tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "benchmarks" / "results" / "sampling.json"


@pytest.fixture(scope="module")
def additive_case():
    """A text of 5 maskable words whose value is additive: each word's weight, the [CLS]/[SEP] fixed."""
    tok = tiny_tokenizer("bert")
    masker = text_masker(tok)
    text = "the movie was good fun"
    players, strings = coalition_strings(masker, text)
    n = len(masker.token_segments(text)[0])
    weights = np.array([0.1, 0.9, -0.2, 0.5, 0.3])
    bits = (np.arange(2 ** len(players))[:, None] >> np.arange(len(players))) & 1
    values = 0.2 + bits @ weights
    case = SimpleNamespace(
        key="tiny.0", text=text, players=players, strings=strings, values=values, ids=np.zeros(n, dtype=np.int64)
    )
    case.phi = shapley_values(values, players, n)
    return case, masker, weights


def test_score_case_on_an_additive_game(additive_case):
    case, masker, weights = additive_case
    cheap = np.zeros(len(case.ids))
    cheap[case.players] = weights  # a perfect cheap method
    out = sampling.score_case(case, cheap, 3.0, masker, (6, 12), seeds=2)
    # permutation sampling and the regression with the exact prior are exact on an additive game
    assert out["regression (cplrp_mask prior)"][6][0] == pytest.approx(1.0)
    assert out["permutation (antithetic)"][12][0] == pytest.approx(1.0)
    assert out["cv coalition (cplrp_mask)"][6][0] == pytest.approx(1.0)
    # the stratified design needs no cheap method: exact on an additive game from p + 1 = 6 evaluations
    assert out["stratified design (no prior)"][6] == (pytest.approx(1.0), 6.0)
    # cost: the distinct coalitions evaluated, plus the cheap method's
    assert out["regression (cplrp_mask prior)"][6][1] == out["regression (no prior)"][6][1] + 3.0 <= 6 + 3.0
    # shap Permutation refuses budgets below 2p + 1 = 11: left out at 6, run at 12
    assert 6 not in out["shap Permutation"] and out["shap Permutation"][12][0] == pytest.approx(1.0)
    assert set(out["shap Partition"]) == {6, 12} and out["shap Partition"][12][1] <= 12


def test_a_constant_ranking_scores_zero(additive_case):
    case, _, _ = additive_case
    assert sampling.spearman_vs_exact(np.ones(len(case.ids)), case) == 0.0


def test_cli_runs_the_benchmark(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from attn_plugins.cli import main

    seen = {}

    def fake(quick=False, seed=0, threads=1):
        seen.update(quick=quick, seed=seed)
        return {"benchmark": "sampling"}

    monkeypatch.setattr(sampling, "run", fake)
    assert main(["bench", "sampling", "--quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"benchmark": "sampling"} and seen == {"quick": True, "seed": 0}


def test_docs_table_is_generated_from_the_json() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import sampling_table
    finally:
        sys.path.pop(0)
    result = json.loads(RESULT.read_text())
    assert result["texts"] == 120 and result["seeds_per_text"] == sampling.SEEDS and not result["quick"]
    for (path, name), body in sampling_table.expected(result).items():
        text = path.read_text(encoding="utf-8")
        block = text.split(f"<!-- {name} -->\n", 1)[1].split(f"<!-- /{name} -->", 1)[0]
        assert block == body + "\n", f"{path.name} {name} is not what sampling_table.py writes"
    accuracy = json.loads((ROOT / "attn_plugins" / "explain" / "sampled_accuracy.json").read_text())
    assert accuracy == json.loads(json.dumps(sampling_table.accuracy(result)))


def test_generation_steps_share_their_coalitions(additive_case):
    """Two explained tokens of one text: one forward per coalition gives both values, so it is counted once."""
    case, _, weights = additive_case
    other = SimpleNamespace(**{**vars(case), "values": 0.1 - case.values, "phi": -case.phi})
    steps = [case, other]
    cheap = [np.zeros(len(case.ids)), np.zeros(len(case.ids))]
    out = sampling.score_text_steps(steps, cheap, [3.0, 3.0], (6, 12), seeds=2)
    # both steps are additive games: the stratified design is exact on them, and its 6 coalitions serve both
    assert out["stratified design (no prior)"][6] == [(pytest.approx(1.0), 3.0), (pytest.approx(1.0), 3.0)]
    # a prior-based estimator pays its cheap method per token: the same 6 coalitions / 2 tokens, plus 3 each
    assert [fe for _, fe in out["regression (cplrp_mask prior)"][6]] == [pytest.approx(6 / 2 + 3.0)] * 2
    assert set(out) == set(sampling.SAMPLERS) and "shap Permutation" not in out


def test_only_a_part_that_exists(capsys: pytest.CaptureFixture[str]) -> None:
    from attn_plugins.cli import main
    from attn_plugins.errors import InputError

    with pytest.raises(InputError, match="only must be one of minilm, generation"):
        sampling.run(only="bert")
    assert main(["bench", "faithful", "--only", "minilm"]) == 2
    assert "has no part 'minilm' (its parts: generation)" in capsys.readouterr().err


def test_readme_states_the_sampled_references_measured_accuracy() -> None:
    accuracy = json.loads((ROOT / "attn_plugins" / "explain" / "sampled_accuracy.json").read_text())["sampled"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    at = {b: f"{accuracy[b]['spearman']['mean']:.2f}" for b in ("10", "100")}
    claim = f"{at['10']} Spearman with exact values at 10 evaluations and {at['100']} at 100"
    assert claim in readme, f"README.md should say {claim!r} (attn_plugins/explain/sampled_accuracy.json)"
