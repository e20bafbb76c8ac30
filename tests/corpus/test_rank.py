"""The corpus-wide word ranking: statistics checked by hand, drawn by shap.plots.bar, read from a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from attn_plugins.corpus import corpus_ranking, save_ranking
from attn_plugins.errors import InputError

matplotlib.use("Agg")

ROWS = [
    {"id": "a", "method": "rollout", "words": ["Good", "film"], "word_scores": [0.6, 0.2]},
    {"id": "b", "method": "rollout", "words": ["bad", "film", "film"], "word_scores": [0.5, 0.1, 0.3]},
    {"id": "c", "method": "rollout", "words": ["good", "plot", "twist", "here"], "word_scores": [0.2, 0.1, 0.1, 0.0]},
]


def test_statistics_by_hand() -> None:
    r = corpus_ranking(ROWS)
    table = {row["word"]: row for row in r.rows()}
    assert table["good"]["count"] == 2 and table["good"]["documents"] == 2  # "Good" and "good" merge
    assert table["good"]["mean"] == pytest.approx(0.4)
    assert table["good"]["std"] == pytest.approx(0.2)
    assert table["film"]["count"] == 3 and table["film"]["documents"] == 2
    assert table["film"]["mean"] == pytest.approx(0.2)
    assert table["film"]["std"] == pytest.approx(np.std([0.2, 0.1, 0.3]))
    assert r.words[:2] == ["bad", "good"]  # by mean, largest first
    assert r.examples == 3 and r.method == "rollout"
    assert corpus_ranking(ROWS, by="count").words[0] == "film"
    assert corpus_ranking(ROWS, by="sum").words[0] == "good"  # 0.8 beats film's 0.6 and bad's 0.5
    assert corpus_ranking(ROWS, min_count=2).words == ["good", "film"]
    assert "Good" in corpus_ranking(ROWS, lowercase=False).words
    # Normalizing by each text's total makes short and long texts weigh alike.
    norm = {row["word"]: row for row in corpus_ranking(ROWS, normalize="sum").rows()}
    assert norm["film"]["sum"] == pytest.approx(0.2 / 0.8 + 0.4 / 0.9)
    assert norm["plot"]["mean"] == pytest.approx(0.1 / 0.4)


def test_multi_output_rows() -> None:
    rows = [{"words": ["x", "y"], "word_scores": [[1.0, 3.0], [0.0, 2.0]]}]
    assert corpus_ranking(rows).mean.tolist() == [2.0, 1.0]
    assert corpus_ranking(rows, output=0).rows()[0] == pytest.approx(
        {"rank": 1, "word": "x", "mean": 1.0, "std": 0.0, "count": 1, "documents": 1, "sum": 1.0}
    )
    with pytest.raises(InputError, match="output must be"):
        corpus_ranking(rows, output=5)


def test_shap_bar_draws_the_ranking_and_tables_render(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    import shap

    r = corpus_ranking(ROWS)
    expl = r.to_explanation(top=3)
    assert expl.shape == (3,)
    np.testing.assert_allclose(expl.values, r.mean[:3])
    plt.figure()
    shap.plots.bar(expl, show=False)
    labels = [t.get_text() for t in plt.gca().get_yticklabels()]
    assert {"bad", "good", "film"} <= set(labels)
    plt.close("all")
    frame = r.to_frame()
    assert list(frame.columns) == ["rank", "word", "mean", "std", "count", "documents", "sum"]
    assert len(frame) == len(r)
    text = str(r)  # header, rule, then rows best first
    assert text.splitlines()[2].split()[:2] == ["1", "bad"]
    assert r.to_dict()["words"][0]["word"] == "bad"
    save_ranking(r, tmp_path / "ranking.json")
    saved = json.loads((tmp_path / "ranking.json").read_text())
    assert saved["words"][0]["word"] == "bad" and saved["examples"] == 3


def test_reads_a_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "a-000000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert corpus_ranking(out).words == corpus_ranking(ROWS).words
    assert corpus_ranking(out / "shards" / "a-000000.jsonl").examples == 3
    legacy = tmp_path / "old"  # a format-1 run: one results.jsonl
    legacy.mkdir()
    (legacy / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert corpus_ranking(legacy).words == corpus_ranking(legacy / "results.jsonl").words == corpus_ranking(ROWS).words


def test_bad_input() -> None:
    with pytest.raises(InputError, match="by must be"):
        corpus_ranking(ROWS, by="median")
    with pytest.raises(InputError, match="normalize"):
        corpus_ranking(ROWS, normalize="zscore")
    with pytest.raises(InputError, match="min_count"):
        corpus_ranking(ROWS, min_count=0)
    with pytest.raises(InputError, match="no words/word_scores"):
        corpus_ranking([{"id": "x", "scores": [1.0]}])
    with pytest.raises(InputError, match="2 words but 1 scores"):
        corpus_ranking([{"id": "x", "words": ["a", "b"], "word_scores": [1.0]}])
    with pytest.raises(InputError, match="no scored words"):
        corpus_ranking([])
    with pytest.raises(InputError, match="at least 9 times"):
        corpus_ranking(ROWS, min_count=9)
    with pytest.raises(InputError, match="expected a corpus run directory"):
        corpus_ranking("/nonexistent/results.txt")
