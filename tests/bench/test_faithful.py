"""Faithfulness benchmark: cached exact values recompute, the scoring pipeline on a tiny model, tables equal the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from attn_plugins.bench import faithful
from attn_plugins.bench.exact import DEFAULT_CACHE, ExactCache, exact_case, text_masker
from attn_plugins.explain.maskers import shapley_values
from attn_plugins.explain.targets import resolve
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "benchmarks" / "results" / "faithful.json"


def test_texts_are_short_enough_for_exact_values_and_split_in_two() -> None:
    data = faithful.load_texts()
    texts = data["texts"]
    assert len(texts) == 120 and len({t["text"] for t in texts}) == 120
    assert sum(t["split"] == "dev" for t in texts) == sum(t["split"] == "test" for t in texts) == 60
    assert all(5 <= t["players"] <= 12 for t in texts)
    assert {t["topic"] for t in texts} == set(range(len(data["topics"]))) and len(data["references"]) == 8
    item = texts[17]
    assert faithful.reference_of(data, item, "topic") == data["references"][item["topic"]]
    assert faithful.reference_of(data, item, "round_robin") == data["references"][17 % 4]


def test_cached_exact_values_recompute() -> None:
    """A few cached cases, recomputed from the model: the committed cache is what the model gives."""
    from helpers.models import minilm

    model, tok = minilm()
    data = faithful.load_texts()
    cache = ExactCache(DEFAULT_CACHE)
    assert len(cache.values) == 2 * len(data["texts"])
    masker = text_masker(tok)
    by_id = {t["id"]: t for t in data["texts"]}
    # two short texts, one whose word pieces re-tokenize when masked (shap's strings, not token ids)
    for pairing, i in (("topic", 36), ("round_robin", 74), ("topic", 59)):
        item = by_id[i]
        key = f"minilm.{pairing}.{i}"
        spec = resolve(model, tok, item["text"], reference=faithful.reference_of(data, item, pairing))
        players, fresh, _, computed = exact_case(spec.fn, masker, item["text"], key, None)
        assert computed and len(players) == item["players"]
        np.testing.assert_allclose(fresh, cache.get(key, item["text"]), atol=2e-6)
        np.testing.assert_allclose(
            shapley_values(fresh, players, len(players) + 2),
            shapley_values(cache.get(key, item["text"]), players, len(players) + 2),
            atol=2e-6,
        )
    assert cache.get("minilm.topic.36", "another text") is None  # keyed by the text itself


def test_cache_round_trip_and_values_lookup(tmp_path: Path) -> None:
    cache = ExactCache(tmp_path / "x.npz")
    cache.put("a", "the text", np.array([0.5, 1.0, 2.0, 4.0]))
    cache.save()
    again = ExactCache(tmp_path / "x.npz")
    np.testing.assert_allclose(again.get("a", "the text"), [0.5, 1.0, 2.0, 4.0])
    # Erased inputs are coalitions: [CLS] x y [SEP] with y masked is coalition 0b01 -> value 1.0
    case = faithful.Case(
        key="a",
        text="x y",
        split="dev",
        ids=np.array([2, 7, 8, 3]),
        special=np.array([1, 0, 0, 1], bool),
        players=np.array([1, 2]),
        values=np.array([0.5, 1.0, 2.0, 4.0]),
        strings=[],
        phi=np.zeros(4),
        gradient_target=None,
        batched=None,
        target_index=0,
        mask_id=4,
    )
    np.testing.assert_allclose(
        case.predict(np.array([[2, 7, 4, 3], [2, 4, 8, 3], [2, 4, 4, 3]]))[:, 0], [1.0, 2.0, 0.5]
    )


@pytest.fixture(scope="module")
def tiny_case():
    """One planted-style case on a tiny random classifier, every coalition evaluated."""
    model, tok = tiny_bert(num_labels=3, seed=7), tiny_tokenizer("bert")
    text = "the movie was good fun"
    spec = resolve(model, tok, text)
    masker = text_masker(tok)
    players, values, strings, _ = exact_case(spec.fn, masker, text, "t", None)
    enc = tok(text, return_special_tokens_mask=True)
    cls = spec.meta["class"]
    case = faithful.Case(
        key="tiny.0",
        text=text,
        split="test",
        ids=np.asarray(enc["input_ids"]),
        special=np.asarray(enc["special_tokens_mask"], bool),
        players=players,
        values=values,
        strings=strings,
        phi=shapley_values(values, players, len(enc["input_ids"])),
        gradient_target=spec.gradient_targets[0],
        batched=lambda ids: model(input_ids=ids).logits[:, cls],
        target_index=0,
        mask_id=tok.mask_token_id,
        rationale=np.array([0, 0, 0, 0, 1, 1, 0], bool),
    )
    return model, tok, masker, case


def test_every_scorer_runs_on_one_case(tiny_case) -> None:
    model, tok, masker, case = tiny_case
    scores = faithful.Scores()
    faithful.score_methods(
        model, tok, case, scores, case.mask_id, rows=False, rng=np.random.default_rng(0), ms_per_row=0.1
    )
    faithful.score_shap(case, masker, scores, 0.1, case.mask_id, (20,))
    names = set(scores.rows)
    assert {"cplrp_mask", "attnlrp", "decompx", "value_zeroing[first]", "alti[first]", "random"} <= names
    assert {"captum IntegratedGradients (20 steps)", "occlusion (leave-one-out)", "shap Partition (20)"} <= names
    assert "shap Permutation (20)" in names  # 5 tokens: shap's minimum of 2p + 1 = 11 evaluations fits in 20
    row = scores.rows["cplrp_mask"][0]
    assert row["fe"] == 3.0 and {"spearman", "token_f1", "auprc", "deletion", "insertion"} <= set(row)
    # shap's estimate at 20 evaluations of 2^5 coalitions, counted; Kernel too
    assert scores.rows["shap Partition (20)"][0]["fe"] <= 22
    # occlusion read from the cache equals the model's own leave-one-out differences
    loo = scores.rows["occlusion (leave-one-out)"][0]
    assert -1 <= loo["spearman"] <= 1
    summary = scores.summary("all", 0, 50, faithful.PLANTED_METRICS)
    assert summary["cplrp_mask"]["texts"] == 1 and summary["cplrp_mask"]["kind"] == "relevance"
    per = scores.per_text("spearman")
    assert per["cases"] == ["tiny.0"] and len(per["cplrp_mask"]) == 1


def test_shap_estimates_are_seeded(tiny_case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of shap's sampling explainers give the same values (Permutation reseeds numpy unless given a
    seed, and shuffles the token tree with numba's own generator)."""
    _, _, masker, case = tiny_case
    seen: list[np.ndarray] = []
    evaluate = faithful.evaluate
    monkeypatch.setattr(faithful, "evaluate", lambda s, *a, **k: seen.append(np.array(s)) or evaluate(s, *a, **k))
    runs = []
    for _ in range(2):
        seen.clear()
        faithful.score_shap(case, masker, faithful.Scores(), 0.1, case.mask_id, (20, 100))
        runs.append(np.stack(seen))
    assert runs[0].shape[0] == 6  # Partition, Permutation, Kernel at each budget
    np.testing.assert_array_equal(runs[0], runs[1])


def test_agreement_by_hand() -> None:
    case = faithful.Case(
        key="h",
        text="",
        split="dev",
        ids=np.arange(5),
        special=np.array([1, 0, 0, 0, 1], bool),
        players=np.array([1, 2, 3]),
        values=np.zeros(8),
        strings=[],
        phi=np.array([0, 3.0, 1.0, 2.0, 0]),
        gradient_target=None,
        batched=None,
        target_index=0,
        mask_id=0,
    )
    out = faithful.agreement(np.array([9.0, 1.0, 2.0, 3.0, 9.0]), case)  # special tokens are not players
    assert out["spearman"] == pytest.approx(-0.5) and out["kendall"] == pytest.approx(-1 / 3)
    assert out["top3"] == 1.0


def test_goals_read_off_a_result() -> None:
    def entry(kind, rho, fe):
        return {"kind": kind, "spearman": {"mean": rho, "ci95": [rho, rho], "n": 2}, "forward_equivalents": fe}

    methods = {
        "cheap": entry("relevance", 0.75, 3.0),
        "costly": entry("relevance", 0.9, 11.0),
        "shap Partition (20)": entry("shap", 0.6, 20.0),
    }
    result = {
        "minilm": {"pairings": {"topic": {"splits": {"all": methods}}}},
        "planted": {"methods": {"cheap": {"token_f1": {"mean": 0.96, "ci95": [0.9, 1.0], "n": 3}}}},
    }
    g = faithful.goals(result)["topic/all"]
    assert g["best"] == "cheap" and g["met_spearman"] and g["above_partition_20"] and g["met_planted_token_f1"]
    assert g["cost_vs_partition_20"] == 0.15


def test_committed_result_states_the_goals_and_the_lxt_figure() -> None:
    result = json.loads(RESULT.read_text())
    assert result["quick"] is False
    assert result["minilm"]["pairings"]["topic"]["texts"] == 120
    goal = result["goals"]["topic/test"]
    assert goal["best"] == "cplrp_mask" and goal["met_spearman"] and goal["above_partition_20"]
    assert goal["forward_equivalents"] <= 3 and goal["met_planted_token_f1"]
    assert result["lxt"]["texts"] == 60 and result["lxt"]["max_abs_diff"] < 1e-12
    assert result["conservation"]["attnlrp"]["max_abs_residual"] < 1e-8


def test_readme_docs_and_reference_accuracy_are_generated_from_the_json() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import faithful_table
    finally:
        sys.path.pop(0)
    result = json.loads(RESULT.read_text())
    for (path, name), body in faithful_table.expected(result).items():
        text = path.read_text(encoding="utf-8")
        block = text.split(f"<!-- {name} -->\n", 1)[1].split(f"<!-- /{name} -->", 1)[0]
        assert block == body + "\n", f"{path.name} {name} is not what faithful_table.py writes"
    accuracy = json.loads((ROOT / "attn_plugins" / "explain" / "reference_accuracy.json").read_text())
    assert accuracy == json.loads(json.dumps(faithful_table.accuracy(result)))


def test_cli_passes_recompute(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from attn_plugins.cli import main

    seen = {}

    def fake(quick=False, seed=0, threads=1, recompute=False, cache=None):
        seen.update(quick=quick, seed=seed, recompute=recompute, cache=cache)
        return {"benchmark": "faithful"}

    monkeypatch.setattr(faithful, "run", fake)
    assert main(["bench", "faithful", "--quick", "--recompute", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"benchmark": "faithful"}
    assert seen == {"quick": True, "seed": 0, "recompute": True, "cache": None}
    assert faithful.main(["--cache", "x.npz", "--json"]) == 0
    assert seen["cache"] == "x.npz" and seen["recompute"] is False
    capsys.readouterr()
    assert main(["bench", "planted", "--recompute"]) == 2
    assert "caches nothing to recompute" in capsys.readouterr().err


def test_the_whole_run_from_the_cli_on_a_tiny_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`attn-plugins bench faithful --quick --json` end to end, with a tiny model, two texts, a small planted run."""
    from attn_plugins.bench import capture, planted
    from attn_plugins.cli import main

    texts = {
        "about": "tiny",
        "topics": ["film", "music"],
        "references": ["a good movie", "the music was fun", "a sad book", "the city at night"],
        "texts": [
            {"id": 0, "text": "the movie was good fun", "topic": 0, "split": "dev", "players": 5},
            {"id": 1, "text": "the music was very sad", "topic": 1, "split": "test", "players": 5},
        ],
    }
    monkeypatch.setattr(faithful, "load_texts", lambda: texts)
    monkeypatch.setattr(capture, "minilm", lambda: (tiny_bert(seed=2), tiny_tokenizer("bert")))
    monkeypatch.setattr(
        planted.Config, "quick", classmethod(lambda cls: cls(n_train=64, n_eval=2, epochs=1, n_resamples=20))
    )
    monkeypatch.setattr(faithful, "DEFAULT_CACHE", tmp_path / "absent.npz", raising=False)
    monkeypatch.setattr("attn_plugins.bench.exact.DEFAULT_CACHE", tmp_path / "absent.npz")
    assert main(["bench", "faithful", "--quick", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quick"] is True and result["lxt"] is None
    block = result["minilm"]["pairings"]["topic"]
    assert block["texts"] == 2 and set(block["splits"]) == {"all", "dev", "test"}
    methods = block["splits"]["all"]
    assert {"cplrp_mask", "attnlrp", "decompx", "value_zeroing[weighted]", "random"} <= set(methods)
    assert {"shap Partition (20)", "shap Kernel (50)", "captum IntegratedGradients (20 steps)"} <= set(methods)
    entry = methods["cplrp_mask"]
    assert entry["forward_equivalents"] == 3.0 and entry["spearman"]["n"] == 2
    lo, hi = entry["spearman"]["ci95"]
    assert lo <= entry["spearman"]["mean"] <= hi
    assert {"aopc_comprehensiveness", "deletion", "insertion", "kendall", "top3"} <= set(entry)
    assert result["minilm"]["exact"]["computed_now"] == 4  # 2 texts x 2 pairings, nothing cached
    assert result["planted"]["texts"] == 2 and "token_f1" in result["planted"]["methods"]["cplrp_mask"]
    assert result["conservation"]["cplrp"]["max_abs_residual"] < 1e-4
    assert "topic/all" in result["goals"] and not (tmp_path / "absent.npz").exists()  # quick runs write nothing
