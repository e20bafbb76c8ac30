"""The learned-attributor benchmark: its corpus, its cached targets, the quick run's scores checked by hand, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

import attn_plugins as ap
from attn_plugins.bench import learned
from attn_plugins.bench.exact import DEFAULT_CACHE, ExactCache, text_masker
from attn_plugins.bench.faithful import PAIRINGS, load_texts, reference_of
from attn_plugins.explain.maskers import coalition_strings, maskable_positions, shapley_values
from attn_plugins.explain.targets import resolve
from tests.helpers.models import minilm


@pytest.fixture(scope="module")
def model_tok():
    return minilm()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return tmp_path_factory.mktemp("learned") / "minilm.safetensors"


@pytest.fixture(scope="module")
def quick(saved):
    return learned.run(quick=True, save=str(saved))


def test_corpus_is_disjoint_from_the_faithful_texts_and_short(model_tok):
    _, tok = model_tok
    masker = text_masker(tok)
    faithful = load_texts()
    corpus = learned.load_corpus()["texts"]
    scored = {t["text"].strip().lower() for t in faithful["texts"]}
    assert len(corpus) >= 300
    assert not {t["text"].strip().lower() for t in corpus} & scored
    assert len({t["text"] for t in corpus}) == len(corpus)
    for item in corpus:
        players = len(maskable_positions(masker, item["text"])[0])
        assert 4 <= len(item["text"].split()) <= 12 and players == item["players"] <= 12, item
        assert len(item["references"]) == 4 and set(item["references"]) <= set(range(len(faithful["references"])))
        if item["topic"] is not None:
            assert item["topic"] in item["references"]  # its own topic's reference, and three others


def test_cached_targets_are_the_models_values(model_tok):
    # Two texts recomputed here, reference by reference with the similarity target's own model function,
    # against the committed cache (float32 there; the model runs in float32 batches of other sizes).
    model, tok = model_tok
    masker = text_masker(tok)
    references = load_texts()["references"]
    corpus = learned.load_corpus()["texts"]
    cache = ExactCache(learned.TARGET_CACHE)
    assert all(cache.get(key, text) is not None for key, text, _ in learned.pairs({"texts": corpus}, references))
    fresh = ExactCache()
    cost = learned.training_targets(model, tok, corpus[:2], references, fresh, recompute=False)
    assert cost["computed"] == 8
    assert cost["model_evaluations"] == sum(2 ** t["players"] for t in corpus[:2])
    for key, text, reference in learned.pairs({"texts": corpus[:2]}, references):
        _, strings = coalition_strings(masker, text)
        direct = resolve(model, tok, text, reference=reference).fn(strings)
        np.testing.assert_allclose(fresh.get(key, text), direct, rtol=0, atol=1e-6)
        np.testing.assert_allclose(cache.get(key, text), direct, rtol=0, atol=1e-6)


def test_quick_run_shape_and_cost(quick):
    assert quick["benchmark"] == "learned" and quick["quick"] is True
    t = quick["training"]
    assert t["texts"] == learned.QUICK_TRAIN and t["pairs"] == 4 * learned.QUICK_TRAIN
    assert t["model_evaluations"] == sum(2 ** i["players"] for i in learned.load_corpus()["texts"][: t["texts"]])
    assert t["fit_seconds"] >= 0 and t["head"] == learned.HEAD
    for pairing in PAIRINGS:
        for split, n in (("all", 2 * learned.QUICK_SCORED), ("test", learned.QUICK_SCORED)):
            for name in ("learned", "cplrp_mask"):
                entry = quick["pairings"][pairing][split][name]
                assert entry["spearman"]["n"] == n
                low, high = entry["spearman"]["ci95"]
                assert -1 <= low <= entry["spearman"]["mean"] <= high <= 1
                assert entry["forward_equivalents"] == 3.0  # one forward and one backward
    assert quick["goal"] == {"spearman": 0.9, "max_forward_equivalents": 3.0, "met": False}


def test_the_fitted_head_ranks_its_training_targets_better_than_the_untrained_one(quick):
    # The untrained head is cplrp_mask itself; early stopping keeps a head only if it validates better.
    t = quick["training"]
    assert t["validation"]["spearman"] >= t["validation"]["baselines"]["cplrp_mask"]
    fit = t["spearman_on_training_pairs"]
    assert fit["learned"]["mean"] > fit["cplrp_mask"]["mean"]


def test_the_saved_attributor_is_the_one_scored(quick, saved, model_tok):
    # bench cost --learned times this file: it must be the attributor whose scores the JSON holds.
    from attn_plugins.methods.learned import LearnedAttributor

    loaded = LearnedAttributor.load(saved)
    assert loaded.info["validation"] == quick["training"]["validation"]
    model, tok = model_tok
    loaded.check_model(model, tok)


def test_quick_scores_are_spearman_against_the_exact_values(quick, model_tok):
    # cplrp_mask's row recomputed with the public API and scipy, text by text.
    model, tok = model_tok
    masker = text_masker(tok)
    data = load_texts()
    cache = ExactCache(DEFAULT_CACHE)
    items = data["texts"][: learned.QUICK_SCORED] + data["texts"][-learned.QUICK_SCORED :]
    for pairing in PAIRINGS:
        rho = []
        for item in items:
            players, n = maskable_positions(masker, item["text"])
            phi = shapley_values(cache.get(f"minilm.{pairing}.{item['id']}", item["text"]), players, n)
            e = ap.explain(model, tok, item["text"], method="cplrp_mask", reference=reference_of(data, item, pairing))
            rho.append(spearmanr(np.ravel(e.values), phi[players]).statistic)
        got = quick["pairings"][pairing]["all"]["cplrp_mask"]["spearman"]["mean"]
        assert got == pytest.approx(np.mean(rho), abs=1e-4)


def test_cli_runs_the_benchmark(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from attn_plugins.cli import main

    seen = {}

    def fake(quick=False, seed=0, threads=1, recompute=False):
        seen.update(quick=quick, seed=seed, recompute=recompute)
        return {"benchmark": "learned"}

    monkeypatch.setattr(learned, "run", fake)
    assert main(["bench", "learned", "--quick", "--recompute", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"benchmark": "learned"}
    assert seen == {"quick": True, "seed": 0, "recompute": True}
