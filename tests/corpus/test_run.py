"""Corpus runs: results equal the explainer's, files are written as they go, and a stopped run resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import attn_plugins as ap
import attn_plugins.corpus.run as ds
from attn_plugins.errors import InputError
from attn_plugins.explain import AttentionExplainer
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

TEXTS = [
    "the movie was good",
    "a very bad film , really bad",
    "i liked the music",
    "boring plot and bad acting",
    "what a great story",
    "the cat saw a dog in the house",
    "hello",
]


@pytest.fixture(scope="module")
def setup() -> tuple:
    return tiny_bert(num_labels=2), tiny_tokenizer("bert")


def _write(path: Path, texts: list[str], ids: bool = True) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"t{i}", "text": t} if ids else {"text": t}) + "\n")
    return path


def _rows(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text("utf-8").splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), "an example was written twice"
    return by_id


def test_run_equals_the_explainer_and_writes_records(setup, tmp_path: Path) -> None:
    model, tok = setup
    src = _write(tmp_path / "texts.jsonl", TEXTS)
    summary = ds.run_corpus(model, tok, src, tmp_path / "out", method="rollout", batch_size=3, progress=False)
    assert summary["explained"] == len(TEXTS) and summary["skipped"] == 0
    assert summary["examples_per_second"] > 0
    rows = _rows(tmp_path / "out")
    explainer = AttentionExplainer(model, tok, method="rollout", special_tokens=True)
    for i, text in enumerate(TEXTS):
        row = rows[f"t{i}"]
        expected = explainer(text)  # one text, its own forward: the batched run must agree
        np.testing.assert_allclose(row["scores"], expected.values[0], atol=1e-5)
        assert row["tokens"] == tok.convert_ids_to_tokens(tok(text)["input_ids"])
        # Words drop [CLS]/[SEP] and sum their pieces; here every word is one token.
        np.testing.assert_allclose(sum(row["word_scores"]), sum(row["scores"][1:-1]), atol=1e-9)
        assert " ".join(row["words"]) == text
        record = ap.load(tmp_path / "out" / row["record"])
        reference = ap.capture(model, tok, text)
        torch.testing.assert_close(record.attentions["self"], reference.attentions["self"], atol=1e-5, rtol=0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["run"]["method"] == "rollout" and manifest["run"]["model_class"] == "BertForSequenceClassification"


def test_gradient_method_goes_through_the_explainer(setup, tmp_path: Path) -> None:
    model, tok = setup
    src = _write(tmp_path / "texts.jsonl", TEXTS[:2], ids=False)
    ds.run_corpus(model, tok, src, tmp_path / "out", method="grad_attention", save_records=False, progress=False)
    rows = _rows(tmp_path / "out")
    assert set(rows) == {"1", "2"}  # ids default to the line numbers
    expected = AttentionExplainer(model, tok, method="grad_attention", special_tokens=True)(TEXTS[1])
    np.testing.assert_allclose(rows["2"]["scores"], expected.values[0], atol=1e-6)
    assert rows["2"]["record"] is None


def test_stop_and_resume_redoes_nothing_and_loses_nothing(setup, tmp_path: Path, monkeypatch) -> None:
    model, tok = setup
    src = _write(tmp_path / "texts.jsonl", TEXTS)
    clean = tmp_path / "clean"
    ds.run_corpus(model, tok, src, clean, batch_size=2, progress=False)

    calls: list[list[str]] = []
    real = ds.explain_batch

    def stopping(explainer, examples):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run during the third batch
        calls.append([e.id for e in examples])
        return real(explainer, examples)

    monkeypatch.setattr(ds, "explain_batch", stopping)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        ds.run_corpus(model, tok, src, out, batch_size=2, progress=False)
    assert set(_rows(out)) == {"t0", "t1", "t2", "t3"}
    # A crash in the middle of an append leaves a partial line behind.
    with open(out / "results.jsonl", "ab") as fh:
        fh.write(b'{"id": "t4", "scor')
    with pytest.raises(InputError, match="incomplete"):
        ds.load_results(out)

    calls.clear()
    monkeypatch.setattr(ds, "explain_batch", lambda e, x: calls.append([y.id for y in x]) or real(e, x))
    summary = ds.run_corpus(model, tok, src, out, batch_size=2, progress=False)
    assert [i for batch in calls for i in batch] == ["t4", "t5", "t6"]  # only the unfinished ones
    assert summary["skipped"] == 4 and summary["explained"] == 3
    resumed, reference = _rows(out), _rows(clean)
    assert set(resumed) == set(reference)
    for key, row in reference.items():
        np.testing.assert_allclose(resumed[key]["scores"], row["scores"], atol=1e-6)
        assert (out / resumed[key]["record"]).exists()
    # A finished run resumed again does nothing.
    calls.clear()
    assert ds.run_corpus(model, tok, src, out, progress=False)["explained"] == 0 and not calls


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"text": "good"}', "{not json"], r":2: not valid JSON"),
        (['{"text": "good"}', '{"text": "   "}'], r":2: the text is empty"),
        (['{"id": 1}'], r':1: needs a "text" string'),
        (['["good"]'], r":1: expected an object"),
        (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], r"id 'a' was already used on line 1"),
        (['{"id": [1], "text": "x"}'], r'"id" must be'),
        (["", "  "], r"holds no texts"),
    ],
)
def test_bad_input_files(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message):
        ds.read_texts(path)


def test_resuming_a_different_run_is_refused(setup, tmp_path: Path) -> None:
    model, tok = setup
    src = _write(tmp_path / "texts.jsonl", TEXTS[:2])
    out = tmp_path / "out"
    ds.run_corpus(model, tok, src, out, save_records=False, progress=False)
    with pytest.raises(InputError, match="method differ"):
        ds.run_corpus(model, tok, src, out, method="raw", save_records=False, progress=False)
    other = tiny_bert(num_labels=2, seed=1)
    with pytest.raises(InputError, match="weights differ"):
        ds.run_corpus(other, tok, src, out, save_records=False, progress=False)
    with pytest.raises(InputError, match="already holds results"):
        ds.run_corpus(model, tok, src, out, resume=False, save_records=False, progress=False)
    changed = _write(tmp_path / "changed.jsonl", ["another text", TEXTS[1]])
    with pytest.raises(InputError, match="text of id 't0' changed"):
        ds.run_corpus(model, tok, changed, out, save_records=False, progress=False)
    with pytest.raises(InputError, match="engine"):
        ds.run_corpus(model, tok, src, out, engine="spark", progress=False)
    with pytest.raises(InputError, match="no such file"):
        ds.run_corpus(model, tok, tmp_path / "missing.jsonl", out, progress=False)
    (out / "results.jsonl").write_text('{"id": "t0"}\nnot json\n')
    with pytest.raises(InputError, match="corrupted results line"):
        ds.load_results(out)


def test_word_scores_group_pieces_and_skip_specials() -> None:
    tokens = ["[CLS]", "un", "##believ", "##able", "film", "[SEP]"]
    scores = np.array([0.5, 0.1, 0.2, 0.3, 0.4, 0.6])
    words, summed = ds.word_scores(scores, tokens, [None, 0, 0, 0, 1, None], None, None, None)
    assert words == ["unbelievable", "film"]
    np.testing.assert_allclose(summed, [0.6, 0.4])
    text = "Unbelievable film"
    offsets = [(0, 0), (0, 2), (2, 8), (8, 12), (13, 17), (0, 0)]
    words, _ = ds.word_scores(np.c_[scores, scores], tokens, [None, 0, 0, 0, 1, None], offsets, text, None)
    assert words == ["Unbelievable", "film"]


def test_ray_engine_equals_local(setup, tmp_path: Path) -> None:
    import ray  # the `ray` extra is part of the `test` extra

    model, tok = setup
    src = _write(tmp_path / "texts.jsonl", TEXTS)
    ds.run_corpus(model, tok, src, tmp_path / "local", batch_size=3, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = ds.run_corpus(
            model, tok, src, tmp_path / "ray", batch_size=3, engine="ray", num_workers=2, progress=False
        )
    finally:
        ray.shutdown()
    assert summary["engine"] == "ray" and summary["explained"] == len(TEXTS)
    local, remote = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert set(local) == set(remote)
    for key, row in local.items():
        assert remote[key]["tokens"] == row["tokens"] and remote[key]["words"] == row["words"]
        np.testing.assert_allclose(remote[key]["scores"], row["scores"], atol=1e-6)
        a = ap.load(tmp_path / "local" / row["record"]).attentions["self"]
        b = ap.load(tmp_path / "ray" / remote[key]["record"]).attentions["self"]
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
