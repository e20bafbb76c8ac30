"""The four task examples run end to end on tiny offline models and write their pages."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_pages(out: Path, summary: dict, expected: set[str]) -> None:
    assert set(summary["pages"]) == expected
    for page in expected:
        text = (out / page).read_text()
        assert len(text) > 500 and "<" in text


def test_sentiment(tmp_path: Path) -> None:
    summary = load_example("sentiment").main(["--out", str(tmp_path)])
    check_pages(tmp_path, summary, {"sentiment_shap_text.html", "sentiment_head_view.html"})
    assert summary["explanation_shape"][0] == 2  # two texts in one shap.Explanation
    assert len(summary["diagnostics"]["entropy"]) == 2  # two layers
    assert isinstance(summary["disagreement"]["flagged"], bool)
    for method in ("raw", "rollout", "flow", "shap"):
        scores = summary[method]
        assert 0 <= scores["token_f1"] <= 1 and 0 <= scores["auprc"] <= 1
        assert math.isfinite(scores["aopc_comprehensiveness"]) and math.isfinite(scores["aopc_sufficiency"])


def test_question_answering(tmp_path: Path) -> None:
    summary = load_example("question_answering").main(["--out", str(tmp_path)])
    check_pages(tmp_path, summary, {"qa_shap_text.html", "qa_model_view.html"})
    assert summary["output_names"] == ["start", "end"]
    start, end = summary["span"]
    assert start <= end
    assert summary["answer"] and "[SEP]" not in summary["answer"]  # the span stays in the context
    assert len(summary["top_tokens_for_start"]) == 3
    assert 0 <= summary["deletion_area"] <= 1


def test_translation(tmp_path: Path) -> None:
    summary = load_example("translation").main(["--out", str(tmp_path)])
    check_pages(tmp_path, summary, {"translation_shap_text.html", "translation_cross_heatmap.html"})
    assert summary["kinds"] == ["encoder", "decoder", "cross"]
    assert summary["explained_tokens"]
    assert "aer_per_layer" in summary
    assert summary["method"] == "cplrp_mask"  # the most faithful method that supports the model: the default
    # the reference's first adjective ('big' -> 'short') against another adjective's translation
    assert summary["contrast"]["explained"] == "'short' rather than 'new'"
    assert len(summary["contrast"]["top_words"]) == 3


def test_summarization(tmp_path: Path) -> None:
    summary = load_example("summarization").main(["--out", str(tmp_path), "--max-new-tokens", "4"])
    check_pages(tmp_path, summary, {"summarization_shap_text.html", "summarization_cross_heatmap.html"})
    n = len(summary["generated"])
    assert 2 <= n <= 4
    assert len(summary["top_source_tokens_per_generated_token"]) == n
    assert summary["explanation_values_shape"][1] == len(summary["explanation_output_names"])
    assert summary["method"] == "cplrp_mask"  # the default: the most faithful method that supports the model
    pairs = list(summary["top_words_per_contrast"])
    assert len(pairs) == n and all(" rather than the" in p for p in pairs)


@pytest.mark.parametrize("name", ["sentiment", "question_answering", "translation", "summarization"])
def test_examples_show_the_hub_line(name: str) -> None:
    source = (EXAMPLES / f"{name}.py").read_text()
    assert "--hub" in source and ".from_pretrained(" in source
