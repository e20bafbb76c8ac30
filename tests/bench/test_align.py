"""Alignment benchmark: hand-checked data generation and AER, and one quick end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attn_plugins.bench import align
from attn_plugins.errors import InputError


def test_dictionary_is_a_derangement_within_classes() -> None:
    lex = align.dictionary(0)
    for words in align.CLASSES:
        assert sorted(lex[w] for w in words) == sorted(words)
        assert all(lex[w] != w for w in words)
    assert lex == align.dictionary(0)


def test_translate_swaps_adjective_noun_and_gives_gold_links() -> None:
    lex = align.dictionary(0)
    pair = align.translate(["the", "big", "cat", "and", "dog"], lex)
    assert pair.target == [lex["the"], lex["cat"], lex["big"], lex["and"], lex["dog"]]
    # (source word, target word)
    assert pair.gold == {(0, 0), (2, 1), (1, 2), (3, 3), (4, 4)}
    # two adjectives: only the one right before the noun moves
    assert align.translate(["big", "old", "car"], lex).gold == {(0, 0), (2, 1), (1, 2)}


def test_aer_by_hand() -> None:
    predicted = {(0, 0), (1, 1), (2, 2)}
    gold = {(0, 0), (2, 1), (1, 2)}
    assert align.aer(predicted, gold) == pytest.approx(1 - 2 / 6)
    # a possible link (1, 1): 1 - (|A∩S| + |A∩P|) / (|A| + |S|) = 1 - (1 + 2) / 6
    assert align.aer(predicted, gold, possible={(1, 1)}) == pytest.approx(0.5)
    assert align.aer(gold, gold) == 0.0


def test_links_and_corpus_counts() -> None:
    assert align.links_from_scores(np.array([[0.1, 0.9], [0.8, 0.2]])) == {(1, 0), (0, 1)}
    counts = align.Counts()
    counts.add({(0, 0), (1, 1)}, {(0, 0), (1, 1)})  # 2 hits
    counts.add({(0, 0), (0, 1)}, {(0, 0), (1, 1)})  # 1 hit
    assert counts.value() == pytest.approx(1 - 2 * 3 / 8)  # summed over the corpus, not averaged


def test_align_bad_input() -> None:
    with pytest.raises(InputError, match="gold alignment is empty"):
        align.aer({(0, 0)}, set())
    with pytest.raises(InputError, match="predicted alignment is empty"):
        align.aer(set(), {(0, 0)})
    with pytest.raises(InputError, match="NaN"):
        align.links_from_scores(np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError, match="matrix"):
        align.links_from_scores(np.array([1.0, 2.0]))


@pytest.fixture(scope="module")
def quick() -> dict:
    return align.run(quick=True, seed=0)


def test_quick_run_reports_layers_heads_methods_baselines(quick: dict) -> None:
    json.dumps(quick)  # JSON-ready
    cfg = align.Config.quick()
    assert set(quick["aer"]["layers"]) == {str(i) for i in range(cfg.layers)}
    assert len(quick["aer"]["heads"]) == cfg.layers * cfg.heads
    for summary in [*quick["aer"]["layers"].values(), *quick["aer"]["methods"].values()]:
        assert 0 <= summary["ci95"][0] <= summary["aer"] <= summary["ci95"][1] <= 1
        assert summary["sentences"] == cfg.n_eval
    assert {"raw", "rollout", "gae"} <= set(quick["aer"]["methods"])
    assert "not defined on cross attention" in quick["errors"]["alti"]
    assert set(quick["aer"]["baselines"]) == {"diagonal", "random"}
    assert quick["model"]["torch_threads"] == 1


def test_main_prints_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen = {}
    monkeypatch.setattr(align, "run", lambda **kw: seen.update(kw) or {"benchmark": "align"})
    assert align.main(["--quick", "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"benchmark": "align"}
    assert seen == {"quick": True, "seed": 3, "threads": 1}


def test_links_are_read_source_then_target_on_asymmetric_data() -> None:
    """A non-square score matrix, so reading the links the wrong way round cannot pass by symmetry."""
    # 3 target words over 4 source words: target 0 -> source 2, target 1 -> source 0, target 2 -> source 3.
    scores = np.array([[0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1], [0.0, 0.1, 0.2, 0.7]])
    gold = {(2, 0), (0, 1), (3, 2)}
    assert align.links_from_scores(scores) == gold
    assert align.aer(align.links_from_scores(scores), gold) == 0.0
    swapped = {(t, s) for s, t in gold}
    assert align.aer(swapped, gold) == 1.0  # a swapped alignment scores as badly as possible


def test_gold_links_are_source_then_target() -> None:
    lex = align.dictionary(0)
    pair = align.translate(["the", "big", "cat", "with", "a", "dog"], lex)
    # Every gold link (s, t) translates source word s into target word t.
    for s, t in pair.gold:
        assert lex[pair.source[s]] == pair.target[t]
    # The adjective-noun swap makes the links asymmetric: (1, 2) and (2, 1) but not (1, 1).
    assert (1, 2) in pair.gold and (2, 1) in pair.gold and (1, 1) not in pair.gold
