"""The zoo benchmark (every zoo type × every built-in method): the docs table is generated from its JSON,
every cell of a run is filled (a number or a refusal with its reason), LRP relevance is conserved in
float64, and the masking of the exact Shapley values is the one cplrp_mask explains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_plugins.bench import zoo
from attn_plugins.errors import AttnPluginsError
from attn_plugins.zoo import zoo_types

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = json.loads((ROOT / "benchmarks" / "results" / "zoo.json").read_text(encoding="utf-8"))
PAGE = ROOT / "docs" / "zoo.md"
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "electra")
ENCODERS = (*BERT_FAMILY, "distilbert", "albert", "deberta-v2", "mpnet", "modernbert")


@pytest.fixture(scope="module")
def quick():
    return zoo.run(quick=True, seed=0)


def _check_every_cell(result):
    assert set(result["types"]) == set(zoo_types())
    for name, info in result["types"].items():
        assert set(info["methods"]) == set(zoo.METHODS), name
        for method, cell in info["methods"].items():
            where = f"{name} × {method}"
            assert "error" not in cell and "conservation_error" not in cell, (where, cell)
            if "refused" in cell:
                assert isinstance(cell["refused"], str) and len(cell["refused"]) > 10, where
                continue
            assert cell["spearman"] is not None and -1 <= cell["spearman"] <= 1, where
            assert cell["n"] == info["examples"], where
            if method in zoo.LRP_METHODS:
                open_item = (name, method) in zoo.OPEN
                assert ("open" in cell) == open_item, where
                if not open_item:
                    assert cell["conservation"] <= zoo.CONSERVATION_TOL, (where, cell["conservation"])
            if method == "cplrp_mask":
                # A Spearman below the goal carries its reason, measured next to it.
                low = cell["spearman"] < result["reference"]["goal_spearman"]
                assert bool(cell["reason"]) == low, (where, cell)
        # The LRP methods support every type (cplrp_mask on pixels and frames: the change from zeros).
        for method in zoo.LRP_METHODS:
            assert "refused" not in info["methods"][method], (name, method)


def test_the_quick_run_fills_every_cell(quick):
    assert quick["config"]["quick"] and quick["config"]["texts"] == list(zoo.TEXTS[:1])
    _check_every_cell(quick)


def test_the_published_run_fills_every_cell():
    assert not PUBLISHED["config"]["quick"] and PUBLISHED["config"]["threads"] == 1
    assert PUBLISHED["config"]["methods"] == list(zoo.METHODS)
    _check_every_cell(PUBLISHED)
    assert all(
        info["examples"] == len(zoo.TEXTS) for n, info in PUBLISHED["types"].items() if n not in ("vit", "whisper")
    )


def test_cplrp_mask_ranks_like_shapley_values_better_than_raw_attention(quick):
    """What a correct implementation gives: on every encoder of the published run, and on the BERT family in
    the quick run, cplrp_mask agrees with the exact Shapley values more than raw attention does."""
    for name in ENCODERS:
        methods = PUBLISHED["types"][name]["methods"]
        assert methods["cplrp_mask"]["spearman"] > methods["raw"]["spearman"], name
    for name in BERT_FAMILY:
        methods = quick["types"][name]["methods"]
        assert methods["cplrp_mask"]["spearman"] > methods["raw"]["spearman"], name


def test_the_docs_table_is_what_the_generator_writes_from_the_json():
    page = PAGE.read_text(encoding="utf-8")
    assert zoo.with_docs_section(page, PUBLISHED) == page, "run python scripts/write_zoo_table.py"
    # A number typed over by hand is caught.
    edited = re.sub(r"\| bert \| (.*?) \| 0\.\d\d \|", lambda m: m.group(0)[:-4] + "99 |", page, count=1)
    assert edited != page and zoo.with_docs_section(edited, PUBLISHED) != edited


def test_the_table_has_a_row_per_type_and_every_refusal_reason():
    text = zoo.table(PUBLISHED)
    for name in zoo_types():
        assert f"\n| {name} | " in text
    for info in PUBLISHED["types"].values():
        for cell in info["methods"].values():
            if "refused" in cell:
                assert cell["refused"].replace(info["model_class"], "the model") in text


def test_a_page_without_markers_is_refused():
    with pytest.raises(AttnPluginsError, match="zoo-table"):
        zoo.with_docs_section("# no table here\n", PUBLISHED)


# ---------------------------------------------------------------------------- the games
def _additive(weights, bias=0.3):
    p = len(weights)
    bits = (np.arange(2**p)[:, None] >> np.arange(p)[None, :]) & 1
    return bias + bits @ np.asarray(weights, dtype=float)


def test_an_additive_game_has_its_weights_as_shapley_and_occlusion_values():
    w = [0.5, -1.0, 2.0, 0.25]
    game = zoo.Game(np.array([0, 2, 3, 4]), _additive(w), 5, "[MASK]")
    np.testing.assert_allclose(game.phi, [0.5, 0, -1.0, 2.0, 0.25], atol=1e-12)
    np.testing.assert_allclose(game.leave_one_out(), game.phi, atol=1e-12)
    assert game.additivity() == pytest.approx(1.0, abs=1e-12)
    # An interaction (players 0 and 1 only count together) is not additive.
    values = _additive(w)
    values[np.arange(16) & 3 == 3] += 3.0
    assert zoo.Game(np.arange(4), values, 4, "[MASK]").additivity() < 0.9


def test_masked_strings_re_tokenize_to_the_baseline_cplrp_mask_explains():
    from attn_plugins.explain.targets import resolve
    from attn_plugins.methods.lrp import mask_token_id

    for model_type in ("bert", "gpt2", "t5"):
        model, tok, _ = zoo.pair(model_type)
        text = zoo.TEXTS[0]
        game = zoo.text_game(model, resolve(model, tok, text), tok, text)
        masker = zoo.text_masker(tok)
        assert tok.convert_tokens_to_ids(masker.mask_token) == mask_token_id(tok)
        assert len(game.values) == 2 ** len(game.players) == 2**5
        # The full text's value is the explained target's own value.
        assert game.values[-1] == pytest.approx(float(resolve(model, tok, text).fn([text])[0]), abs=1e-5)


def test_a_text_whose_masked_strings_change_its_tokens_is_refused():
    from attn_plugins.explain.targets import resolve

    model, tok, _ = zoo.pair("bert")
    text = "the zebra was good"  # 'zebra' is not in the tiny vocabulary: word pieces, which masking re-joins
    with pytest.raises(AttnPluginsError, match="re-tokenize"):
        zoo.text_game(model, resolve(model, tok, text), tok, text)


def test_the_entropy_is_the_one_constant_of_a_log_probability_budget():
    """Without taking −H out, the budget of a log-probability leaves a residual of about H; with it, none."""
    from attn_plugins.explain.targets import resolve
    from attn_plugins.methods.lrp import budget, encode_one

    model, tok, _ = zoo.pair("llama")
    text = zoo.TEXTS[0]
    spec = resolve(model, tok, text)
    inputs = encode_one("cplrp", model, tok, text, None, {}).inputs
    target, constant = zoo.without_constant(spec.gradient_targets[0])
    closed = budget(model, inputs, target, "detached")
    assert abs(closed["residual"]) <= 1e-8 * abs(closed["f"])
    raw = budget(model, inputs, spec.gradient_targets[0], "detached")
    with torch.no_grad():
        logp = torch.log_softmax(model(**inputs).logits[0, -1], -1)
    entropy = float(-(logp.exp() * logp).sum())
    assert constant["value"] == pytest.approx(-entropy, rel=1e-9)
    assert raw["residual"] == pytest.approx(-entropy, rel=1e-6)
    assert zoo.conservation(model, tok, text, "cplrp")["relative"] <= 1e-8
    # cplrp_mask's budget is taken at its midpoint between the masked text and the text: another f, closed too.
    from attn_plugins.methods.lrp import masked_baseline

    masked = masked_baseline(inputs["input_ids"], [False] * inputs["input_ids"].shape[1], tok)
    mid = budget(model, inputs, target, "detached", baseline_ids=masked)
    assert abs(mid["f"] - closed["f"]) > 1e-3 and abs(mid["residual"]) <= 1e-8 * abs(mid["f"])


def test_the_command_line_runs_the_benchmark(monkeypatch, capsys):
    from attn_plugins import cli

    seen = {}

    def fake(**options):
        seen.update(options)
        return {"benchmark": "zoo"}

    monkeypatch.setattr(zoo, "run", fake)
    assert cli.main(["bench", "zoo", "--quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"benchmark": "zoo"} and seen == {"quick": True, "seed": 0}
