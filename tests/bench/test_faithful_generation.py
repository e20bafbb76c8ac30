"""The generation part of the faithfulness benchmark: the known truth by hand, trained models that learn their
task, exact Shapley values that find the truth, the CLI's --only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attn_plugins.bench import faithful, generation


def test_the_cipher_translates_word_by_word_and_swaps_a_modifier_before_a_noun() -> None:
    words, align = generation.translate(["big", "cat", "dog", "old", "small", "tree"])
    c = generation.CIPHER
    assert words == [c["cat"], c["big"], c["dog"], c["old"], c["tree"], c["small"]]
    assert align == [1, 0, 2, 3, 5, 4]
    assert len(set(c.values())) == len(c) and not set(c.values()) & set(c)  # a bijection onto other words


def test_aer_by_hand() -> None:
    truth = np.array([0, 0, 1, 0], bool)
    players = np.array([0, 1, 2])  # position 3 is special: never a predicted link
    assert generation.aer(np.array([0.1, 0.2, 0.9, 5.0]), truth, players) == 0.0
    assert generation.aer(np.array([0.1, 0.9, 0.2, 0.0]), truth, players) == 1.0


def test_masked_values_enumerate_coalitions_by_bit_pattern() -> None:
    ids = torch.tensor([[9, 5, 7, 8]])
    values = generation.masked_values(lambda b: b.sum(1, keepdim=True).double(), ids, np.array([1, 2]), 0)
    # bit j set: player j kept; masked players become id 0
    np.testing.assert_array_equal(values[:, 0], [9 + 8, 9 + 5 + 8, 9 + 7 + 8, 9 + 5 + 7 + 8])


@pytest.fixture(scope="module")
def planted():
    config = generation.Config.quick()
    trained = generation.decoder_planted(config, 0)
    return trained, generation.task_result(trained, ("cplrp_mask", "raw", "decompx"), 0, config.n_resamples)


def test_decoder_classifier_learns_and_the_truth_is_what_shapley_finds(planted) -> None:
    trained, result = planted
    assert trained.accuracy >= 0.9 and len(trained.texts) == 4
    methods = result["methods"]
    # The model's deciding tokens are the planted triggers: exact Shapley values rank them first.
    assert methods["exact Shapley"]["token_f1"]["mean"] >= 0.9
    assert methods["exact Shapley"]["spearman"]["mean"] == 1.0
    assert methods["random"]["token_f1"]["mean"] < 0.6
    # relevance of the class word's log-probability at [SEP], one forward and one backward per token
    assert methods["cplrp_mask"]["forward_equivalents"] == 3.0 and methods["cplrp_mask"]["kind"] == "relevance"
    assert methods["cplrp_mask"]["token_f1"]["mean"] >= 0.9
    assert methods["raw"]["forward_equivalents"] == 1.0
    # DecompX decomposes Llama-family decoders: scored like the others (it is refused on the Marian model).
    assert methods["decompx"]["kind"] == "relevance" and methods["decompx"]["token_f1"]["mean"] >= 0.9


def test_every_step_explains_the_class_word_at_the_last_row(planted) -> None:
    trained, _ = planted
    for text in trained.texts:
        (step,) = text.steps
        ids = text.inputs["input_ids"]
        assert step.row == ids.shape[1] - 1 and list(step.players) == list(range(1, ids.shape[1] - 1))
        with torch.no_grad():
            logp = torch.log_softmax(trained.model(input_ids=ids).logits[0, step.row], -1)
        assert step.values[-1] == pytest.approx(float(logp[step.target.token]), abs=1e-5)  # the full coalition
        assert trained.tokenizer.convert_ids_to_tokens(step.target.token) in generation.CLASS_WORDS


def test_translation_model_learns_the_cipher_and_exact_values_find_the_alignment() -> None:
    config = generation.Config.quick()
    trained = generation.translation(config, 0)
    assert trained.accuracy >= 0.75 and trained.texts
    result = generation.task_result(trained, ("raw", "decompx"), 0, config.n_resamples)
    methods = result["methods"]
    assert "decompx" in result["errors"] and "decompx" not in methods  # refused on Marian, reported, not faked
    assert methods["exact Shapley"]["aer"]["mean"] <= 0.1
    assert methods["random"]["aer"]["mean"] >= 0.5
    tokens = result["tokens"]
    assert tokens == sum(len(t.steps) for t in trained.texts) >= 4 * len(trained.texts)
    # raw attention captures once per text: its cost per token is one forward over the text's tokens
    assert methods["raw"]["forward_equivalents"] < 1.0


def test_goals_read_off_the_tasks() -> None:
    def entry(kind, rho, fe, f1, aer=None):
        e = {"kind": kind, "forward_equivalents": fe}
        e["spearman"] = {"mean": rho, "ci95": [rho, rho], "n": 1}
        e["token_f1"] = {"mean": f1, "ci95": [f1, f1], "n": 1}
        if aer is not None:
            e["aer"] = {"mean": aer, "ci95": [aer, aer], "n": 1}
        return e

    tasks = {
        "translation": {
            "methods": {
                "cheap": entry("relevance", 0.85, 3.0, 0.9, 0.05),
                "costly": entry("relevance", 0.95, 9.0, 1.0, 0.0),
                "exact Shapley": entry("reference", 1.0, 1.0, 1.0, 0.0),
            }
        }
    }
    g = generation.goals(tasks)["translation"]
    assert g["best"] == "cheap" and g["met_spearman"] and g["met_aer"]


def test_cli_runs_the_generation_part_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from attn_plugins.cli import main

    seen = {}
    monkeypatch.setattr(generation, "run", lambda quick, seed, threads: seen.update(quick=quick) or {"tasks": {}})
    assert main(["bench", "faithful", "--only", "generation", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"benchmark": "faithful", "quick": True, "generation": {"tasks": {}}} and seen == {"quick": True}
    assert main(["bench", "planted", "--only", "generation"]) == 2
    assert "has no parts to run alone" in capsys.readouterr().err
    with pytest.raises(Exception, match="only= must be one of generation"):
        faithful.run(only="minilm")
