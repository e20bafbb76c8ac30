"""Truncation is honoured wherever a text is tokenized: targets, explainers, compare and the report.

With ``truncation=True`` the longest prefix of the text that fits the model is explained (by every
method and by shap alike) and the record says so; without it, one InputError naming the text. The tiny
classifier accepts 64 positions; the long text has 120 words (122 tokens with [CLS] and [SEP]).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers.broken import texts_of_lengths
from helpers.models import bart_seq2seq, bert_head, gpt2_lm

import attn_plugins as ap
from attn_plugins.cli import main
from attn_plugins.explain.targets import resolve
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

LIMIT = 64
LONG = texts_of_lengths([120])[0]
SHORT = "the movie was great"


def names_text(message: str, index: int) -> bool:
    return bool(re.search(rf"\btext {index}\b", message)) and LONG[:20] in message


def test_fit_text_cuts_at_a_token_boundary_to_the_limit():
    from attn_plugins.explain.targets import fit_text

    tok = tiny_tokenizer()
    model = tiny_bert()
    cut, original = fit_text(model, tok, LONG, truncation=True)
    assert original == 122
    assert LONG.startswith(cut) and len(tok(cut)["input_ids"]) == LIMIT
    assert fit_text(model, tok, SHORT, truncation=True) == (SHORT, None)
    assert fit_text(model, tok, LONG, truncation=True, max_length=10)[0] == " ".join(LONG.split()[:8])
    with pytest.raises(ap.InputError, match=r"text 3 \('the movie.*has 122 tokens.*at most 64.*truncation=True"):
        fit_text(model, tok, LONG, name="text 3 ('the movie')")


def test_explain_truncation(classifier):
    expl = ap.explain(classifier, tiny_tokenizer(), LONG, method="raw", truncation=True)
    # was: RuntimeError "The expanded size of the tensor (122) must match the existing size (64)"
    assert len(expl.values[0]) == LIMIT - 2  # [CLS] and [SEP] are left out of explanations
    assert list(expl.data[0][:2]) == ["the ", "movie "]


def test_explain_without_truncation_names_the_text(classifier):
    with pytest.raises(ap.InputError) as info:
        ap.explain(classifier, tiny_tokenizer(), [SHORT, LONG], method="raw")
    assert names_text(str(info.value), 2), str(info.value)


def test_explain_similarity_truncation():
    expl = ap.explain(tiny_bert(), tiny_tokenizer(), LONG, method="raw", reference=SHORT, truncation=True)
    assert len(expl.values[0]) == LIMIT - 2
    with pytest.raises(ap.InputError, match="the reference text"):
        ap.explain(tiny_bert(), tiny_tokenizer(), SHORT, method="raw", reference=LONG)


@pytest.mark.parametrize("method", ["raw", "grad_attention", "alti"])
def test_every_kind_of_capture_reads_the_cut_text(classifier, method):
    """Methods that capture gradients or run a second forward (ALTI) tokenize the same prefix."""
    explainer = ap.AttentionExplainer(classifier, tiny_tokenizer(), method=method, truncation=True)
    spec = explainer.resolve(LONG)
    values, record = explainer.scores(spec)
    assert len(values) == len(record.tokens) == LIMIT
    assert record.meta["truncated"] is True and record.meta["original_tokens"] == 122


def test_compare_truncation(classifier):
    result = ap.compare(classifier, tiny_tokenizer(), [LONG], methods=["raw"], max_evals=8, truncation=True)
    detail = result.details[0]
    assert len(detail["methods"]["raw"]) == len(detail["shap"]) == LIMIT  # shap explains the same prefix
    assert detail["truncated"] is True
    assert not result.methods[0].get("error")


def test_compare_without_truncation_names_the_text(classifier):
    with pytest.raises(ap.InputError) as info:
        ap.compare(classifier, tiny_tokenizer(), [SHORT, LONG], methods=["raw"], max_evals=8)
    assert names_text(str(info.value), 2), str(info.value)


@pytest.mark.parametrize("shap_evals", [0, 8])
def test_report_truncation_marks_the_record(classifier, shap_evals):
    page = ap.report(
        classifier, tiny_tokenizer(), [SHORT, LONG], methods=["raw"], shap_evals=shap_evals, truncation=True
    )
    short, long = page.records
    assert len(long.tokens) == LIMIT and long.meta["truncated"] is True
    assert not short.meta.get("truncated")


def test_question_answering_truncates_the_context():
    model = bert_head("qa")
    tok = tiny_tokenizer()
    spec = resolve(model, tok, ("what movie", LONG), truncation=True)
    assert spec.inputs["input_ids"].shape[1] == LIMIT and spec.meta["truncated"] is True
    with pytest.raises(ap.InputError, match="question and context"):
        resolve(model, tok, ("what movie", LONG))


def test_generation_leaves_room_for_the_generated_tokens():
    model, tok = gpt2_lm()
    spec = resolve(model, tok, LONG, max_new_tokens=4, truncation=True)
    assert spec.meta["prompt_length"] == LIMIT - 4 and spec.meta["truncated"] is True
    expl = ap.explain(model, tok, LONG, method="raw", max_new_tokens=4, truncation=True)
    n = len(expl.output_names[0])
    assert np.asarray(expl.values[0]).shape == (LIMIT - 4 + n - 1, n)  # the prompt and the generated tokens
    with pytest.raises(ap.InputError, match="leaving 4 for generated tokens"):
        resolve(model, tok, LONG, max_new_tokens=4)


def test_seq2seq_truncates_the_source():
    model, tok = bart_seq2seq()
    long = " ".join(["the cat saw a dog"] * 20)
    spec = resolve(model, tok, long, max_new_tokens=2, truncation=True)
    assert spec.inputs["input_ids"].shape[1] <= LIMIT and spec.meta["truncated"] is True


def test_cli_explain_truncate_long_text(classifier_dir, tmp_path, capsys):
    for evals in ("0", "8"):
        out = tmp_path / f"r{evals}.html"
        argv = ["explain", LONG, "--model", classifier_dir, "--truncate", "--methods", "raw", "--shap-evals", evals]
        assert main([str(a) for a in [*argv, "-o", out]]) == 0, capsys.readouterr().err
        assert out.is_file()


def test_cli_compare_truncate(classifier_dir, capsys):
    argv = ["compare", LONG, "--model", classifier_dir, "--methods", "raw", "--max-evals", "8", "--json"]
    assert main([str(a) for a in [*argv, "--truncate"]]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["details"][0]["methods"]["raw"]) == LIMIT and result["details"][0]["truncated"] is True
    assert main([str(a) for a in argv]) == 2
    assert "--truncate" in capsys.readouterr().err
