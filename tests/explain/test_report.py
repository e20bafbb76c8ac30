"""The report's "Can this view be trusted?" section: sink heads, and disagreement with a faithful reference."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins import AttentionRecord, InputError
from attn_plugins.views.report import trust_section


def sink_record() -> AttentionRecord:
    """Two heads: one puts 90 % of every row on [CLS] (a sink head), one attends to the token itself."""
    n = 5
    sink = torch.full((n, n), 0.1 / (n - 1))
    sink[:, 0] = 0.9
    own = torch.eye(n)
    return AttentionRecord(
        tokens=["[CLS]", "good", "bad", "movie", "[SEP]"],
        attentions={"self": torch.stack([sink, own]).unsqueeze(0)},
        special_tokens_mask=[True, False, False, False, True],
    )


def test_sink_heads_are_reported():
    html = trust_section(sink_record(), {}, None).body
    assert "1 of 2 heads put most of their attention on special tokens" in html
    assert 'class="attn-warn"' in html


def test_a_kind_whose_rows_see_one_key_is_not_diagnosed():
    # An encoder-decoder explained at its first generated token: the decoder reads its start token alone.
    rec = sink_record()
    rec.attentions = {"encoder": rec.attentions["self"], "decoder": torch.ones(1, 2, 1, 1)}
    html = trust_section(rec, {}, None).body
    assert "encoder attention: 1 of 2 heads put most of their attention on special tokens" in html
    assert "decoder attention" not in html


def test_methods_that_disagree_with_the_reference_are_flagged():
    rec = sink_record()
    reference = np.array([0.0, 3.0, 1.0, 0.5, 0.0])
    scores = {
        "agrees": np.array([0.2, 2.0, 1.5, 0.1, 0.9]),  # same order as the reference on real tokens
        "inverted": np.array([0.2, 0.1, 1.0, 2.0, 0.9]),  # reversed order
        "shap": reference,
    }
    html = trust_section(rec, scores, "shap").body
    assert html.count('class="attn-flag"') == 1
    assert "inverted disagrees with shap: Spearman -1.00" in html
    assert "agrees agrees with shap: Spearman 1.00" in html


def test_report_requires_the_named_reference_and_shows_the_section():
    rec = sink_record()
    page = ap.views.report(rec, {"raw": np.ones(5), "shap": np.arange(5.0)}, reference="shap")
    assert "Can this view be trusted?" in page.html
    assert "raw cannot be compared with shap: a is constant" in page.html
    with pytest.raises(InputError, match="reference 'nope' is not one of the scores"):
        ap.views.report(rec, {"raw": np.ones(5)}, reference="nope")


def test_methods_are_ranked_and_the_best_one_is_named():
    rec = sink_record()
    reference = np.array([0.0, 3.0, 1.0, 0.5, 0.0])
    scores = {
        "close": np.array([0.0, 2.0, 0.1, 1.5, 0.0]),  # the last two swapped: Spearman 0.5
        "same": np.array([9.0, 3.0, 2.0, 1.0, 9.0]),  # the reference's order on real tokens (special ones ignored)
        "inverted": np.array([0.2, 0.1, 1.0, 2.0, 0.9]),
        "ref": reference,
    }
    note = "Reference: exact Shapley values of the explained output"
    html = trust_section(rec, scores, "ref", note).body
    assert "Read same: of the 3 methods it agrees best with ref on this text (Spearman 1.00" in html
    assert "Ranking by Spearman: same 1.00, close 0.50, inverted -1.00" in html
    assert html.index(note) < html.index("Read same") < html.index("inverted disagrees")
    none_agree = trust_section(rec, {"inverted": scores["inverted"], "ref": reference}, "ref").body
    assert (
        "No method agrees with ref on this text (best: inverted, Spearman -1.00); read the reference itself"
        in none_agree
    )


def test_ap_report_uses_exact_values_when_affordable_and_states_the_estimates_error_otherwise():
    from attn_plugins.explain.report import reference_error
    from attn_plugins.zoo import tiny_bert, tiny_tokenizer

    model, tok = tiny_bert(num_labels=2), tiny_tokenizer("bert")
    page = ap.report(model, tok, "the movie was good", methods=["raw", "attnlrp"], shap_evals=40)
    assert "Reference: exact Shapley values of the explained output, every coalition" in page.html
    assert "(16 masked inputs" in page.html
    long = "the movie was good and the music was fun but the plot was sad and slow"
    page = ap.report(model, tok, long, methods=["raw"], shap_evals=40, exact_max=8)
    assert "Reference: shap&#x27;s Partition explainer at 40 evaluations" in page.html
    assert re.search(r"has \d+ maskable tokens", page.html)
    assert "its error at 40 evaluations was not measured" in page.html
    error = reference_error(500)
    assert error is not None and "Spearman" in error and "at 500 evaluations" in error
    page = ap.report(model, tok, long, methods=["raw"], shap_evals=500, faithful_reference="shap")
    assert error in page.html.replace("&#x27;", "'")
    with pytest.raises(InputError, match="reference must be one of"):
        ap.report(model, tok, "the movie", methods=["raw"], faithful_reference="lime")


def test_the_reference_sentence_says_how_coarse_a_partition_estimate_is():
    from attn_plugins.explain.report import reference_sentence

    # 5 tokens, the special ones at 0: Partition gave the two middle tokens one value (one group)
    detail = {"evaluations": 100, "reference": "shap", "shap": [0.0, 0.5, 0.5, 0.2, 0.0]}
    sentence = reference_sentence(detail, 100)
    assert "Partition explainer at 100 evaluations (100 masked inputs)" in sentence
    assert "Spearman" in sentence and "at 100 evaluations" in sentence  # the measured error at this budget
    assert "told apart 2 values over 5 tokens" in sentence


def test_the_report_defaults_are_the_faithful_methods_and_a_budget_measured_as_good_as_500():
    import json
    from importlib import resources

    from attn_plugins.explain.compare import DEFAULT_METHODS as COMPARE_METHODS
    from attn_plugins.explain.defaults import REPORT_SHAP_EVALS
    from attn_plugins.explain.report import DEFAULT_METHODS

    assert {"cplrp_mask", "attnlrp"} <= set(DEFAULT_METHODS) and "flow" not in DEFAULT_METHODS
    assert {"cplrp_mask", "attnlrp"} <= set(COMPARE_METHODS)
    data = json.loads(resources.files("attn_plugins.explain").joinpath("reference_accuracy.json").read_text("utf-8"))
    at = data["partition"][str(REPORT_SHAP_EVALS)]["spearman"]
    best = data["partition"]["500"]["spearman"]
    # the cheaper budget's interval reaches the 500-evaluation mean: as good within the benchmark's noise
    assert at["ci95"][0] <= best["mean"] <= at["ci95"][1]


def test_a_long_texts_views_draw_the_last_layers_that_fit_and_say_so(monkeypatch):
    import importlib

    from attn_plugins.zoo import tiny_bert, tiny_tokenizer

    report_module = importlib.import_module("attn_plugins.explain.report")  # the module, not ap.report
    model, tok = tiny_bert(num_labels=2, layers=3), tiny_tokenizer("bert")
    text = "the movie was good and the music was fun"  # 11 tokens: 4 heads x 11 x 11 = 484 weights a layer
    page = ap.report(model, tok, text, methods=["raw"], shap_evals=0)
    assert '"shape":[3,4,11,11]' in page.html and "The views draw the last" not in page.html
    monkeypatch.setattr(report_module, "VIEW_MAX_WEIGHTS", 2 * 484 + 10)  # room for two layers, not three
    page = ap.report(model, tok, text, methods=["raw"], shap_evals=0)
    assert '"shape":[2,4,11,11]' in page.html
    assert "The views draw the last 2 layers (layers 1-2 of 3)" in page.html
    monkeypatch.setattr(report_module, "VIEW_MAX_WEIGHTS", 10)  # not even one: still the last layer
    page = ap.report(model, tok, text, methods=["raw"], shap_evals=0)
    assert '"shape":[1,4,11,11]' in page.html and "The views draw the last layer (layer 2 of 3)" in page.html


def test_the_reference_sentence_states_the_sampled_references_measured_error():
    from attn_plugins.explain.report import reference_error, reference_sentence

    detail = {"evaluations": 96, "reference": "sampled", "shap": [0.0, 0.5, 0.2, 0.0], "reference_note": "why"}
    sentence = reference_sentence(detail, 100)
    assert sentence.startswith("Reference: sampled Shapley values at 100 evaluations (96 masked inputs")
    error = reference_error(100, "sampled")
    assert error and "sampling benchmark" in error and "at 100 evaluations" in error and error in sentence
    assert "was not measured" in reference_error(30, "sampled")
    # below the tokens + 1 evaluations the reference is the prior regression: its own measured error is quoted
    from attn_plugins.explain.compare import SAMPLED_FALLBACK

    fallback = {**detail, "reference_note": f"... (KernelSHAP regression at 10 evaluations, {SAMPLED_FALLBACK}, ...)"}
    prior_error = reference_error(10, "sampled_prior")
    assert prior_error != reference_error(10, "sampled") and prior_error in reference_sentence(fallback, 10)
