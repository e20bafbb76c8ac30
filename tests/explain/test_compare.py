"""ap.compare: attention methods against shap's own Partition explainer on the same target."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import shap
from helpers.models import gpt2_lm, minilm

import attn_plugins as ap
from attn_plugins.errors import InputError, MissingCaptureError, PluginError
from attn_plugins.explain.compare import agreement
from attn_plugins.explain.targets import resolve
from attn_plugins.methods.base import Method
from attn_plugins.metrics.agreement import top_k_overlap
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

TEXTS = ["the movie was good", "a bad film and a very boring plot"]


def test_agreement_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert agreement(a, a[::-1], k=2) == {"spearman": -1.0, "kendall": -1.0, "top_k": 0.0}
    # one swap among four: rho = 1 - 6·(1+1)/(4·15) = 0.8, tau = (5 - 1)/6
    got = agreement(a, np.array([1.0, 2.0, 4.0, 3.0]), k=2)
    assert got["spearman"] == pytest.approx(0.8)
    assert got["kendall"] == pytest.approx(4 / 6)
    assert got["top_k"] == 1.0
    assert top_k_overlap(np.array([5.0, 1.0, 4.0]), np.array([0.0, 9.0, 8.0]), 2) == 0.5
    assert np.isnan(agreement(np.ones(3), a[:3], k=1)["spearman"])  # constant ranking: undefined


def test_compare_on_a_classifier_matches_shap_run_separately():
    model, tok = tiny_bert(num_labels=3), tiny_tokenizer("bert")
    result = ap.compare(model, tok, TEXTS, methods=["raw", "rollout", "gae"], max_evals=40, top_k=2)
    # the reference is shap's own Partition explainer on the same target, run here independently
    for text, detail in zip(TEXTS, result.details):
        spec = resolve(model, tok, text)
        own = shap.Explainer(spec.fn, shap.maskers.Text(tok), algorithm="partition")([text], max_evals=40, silent=True)
        np.testing.assert_allclose(detail["shap"], own.values[0], atol=1e-6)
        keep = slice(1, -1)  # [CLS] and [SEP] are never masked
        for name in ("raw", "rollout", "gae"):
            ours = np.array(detail["methods"][name])[keep]
            rho = scipy.stats.spearmanr(ours, np.array(detail["shap"])[keep]).statistic
            stats = next(r for r in result.methods if r["method"] == name)["per_text"][TEXTS.index(text)]
            assert stats["spearman"] == pytest.approx(rho)
    rows = {r["method"]: r for r in result.methods}
    assert rows["raw"]["forward_passes_per_text"] == 1.0 and rows["gae"]["forward_passes_per_text"] == 1.0
    for row in rows.values():
        assert -1 <= row["spearman"] <= 1 and -1 <= row["kendall"] <= 1 and 0 <= row["top_k"] <= 1
        assert row["seconds_per_text"] > 0
    assert result.reference_cost["evaluations_per_text"] <= 40 + 2
    table = str(result)
    assert "rollout" in table and "spearman" in table and "top-2" in table
    data = json.loads(result.to_json())
    assert data["task"] == "classification" and [m["method"] for m in data["methods"]] == ["raw", "rollout", "gae"]


def test_compare_on_the_packaged_minilm_similarity():
    model, tok = minilm()
    result = ap.compare(
        model,
        tok,
        ["a good film with a great plot"],
        methods=["rollout", "norm"],
        target="a wonderful movie",
        max_evals=60,
    )
    assert result.task == "similarity"
    assert "similarity to 'a wonderful movie'" in str(result)
    assert all("error" not in r for r in result.methods)


def test_compare_reports_a_failing_method_and_rejects_bad_input():
    model, tok = tiny_bert(num_labels=2), tiny_tokenizer("bert")

    class NeedsValues(Method):
        """Reads an extra no capture provides: it fails on every record."""

        name = "needs_values"
        requires = ("extras:not_captured",)

        def matrix(self, record, *, kind, layers, heads, head_reduce):
            raise MissingCaptureError("method 'needs_values' needs record.extras['not_captured']")

    result = ap.compare(model, tok, TEXTS[:1], methods=[NeedsValues(), "raw"], max_evals=20)
    rows = {r["method"]: r for r in result.methods}
    assert "MissingCaptureError" in rows["needs_values"]["error"] and "not_captured" in rows["needs_values"]["error"]
    assert "error" not in rows["raw"]
    assert "needs_values" in str(result) and "error:" in str(result)
    with pytest.raises(InputError, match="reference must be one of 'shap', 'exact', 'auto'"):
        ap.compare(model, tok, TEXTS, reference="lime")
    with pytest.raises(PluginError, match="no method named 'nope'"):
        ap.compare(model, tok, TEXTS, methods=["nope"])
    with pytest.raises(InputError, match="max_evals"):
        ap.compare(model, tok, TEXTS, max_evals=1)
    with pytest.raises(InputError, match="plain texts"):
        ap.compare(model, tok, [("a question", "a context")])
    lm, lm_tok = gpt2_lm()
    with pytest.raises(InputError, match="'generation' task"):
        ap.compare(lm, lm_tok, ["the movie"], methods=["raw"], task="generation")
    with pytest.raises(InputError, match="class index 5"):
        ap.compare(model, tok, TEXTS, methods=["raw"], target=5)


def test_exact_reference_is_shaps_own_exact_explainer_and_long_texts_fall_back():
    model, tok = tiny_bert(num_labels=3, seed=3), tiny_tokenizer("bert")
    short, long = "the movie was good", "the movie was good and the music was fun but the plot was sad and slow"
    result = ap.compare(model, tok, [short], methods=["raw"], reference="exact")
    detail = result.details[0]
    assert detail["reference"] == "exact" and detail["evaluations"] == 2**4

    class Flat(shap.maskers.Text):
        clustering = None  # without the token hierarchy shap's Exact explainer gives Shapley (not Owen) values

    spec = resolve(model, tok, short)
    own = shap.explainers.Exact(spec.fn, Flat(tok))([short], silent=True)
    np.testing.assert_allclose(detail["shap"], own.values[0], atol=1e-6)
    assert result.reference_used == "exact Shapley values"

    with pytest.warns(UserWarning, match=r"has (\d+) maskable tokens: exact Shapley values would take 2\^\1"):
        fallback = ap.compare(model, tok, [long], methods=["raw"], reference="exact", max_evals=40)
    assert fallback.details[0]["reference"] == "shap"
    auto = ap.compare(model, tok, [short, long], methods=["raw"], reference="auto", max_evals=40, exact_max=8)
    assert [d["reference"] for d in auto.details] == ["exact", "shap"]
    assert auto.details[1]["reference_note"] and auto.details[0]["reference_note"] is None
    assert "exact Shapley values (1 texts) / shap Partition (40 evaluations) (1 texts)" in str(auto)
    assert "note: 'the movie was good and the music was fun'... has 19 maskable tokens" in str(auto)
    with pytest.raises(InputError, match="exact_max must be an integer from 1 to 14"):
        ap.compare(model, tok, [short], methods=["raw"], reference="auto", exact_max=20)


def test_sampled_reference_below_the_tokens_plus_one_falls_back_to_the_prior_regression():
    from attn_plugins.explain.estimators import estimate_shapley
    from attn_plugins.explain.explainer import AttentionExplainer

    model, tok = tiny_bert(num_labels=3, seed=3), tiny_tokenizer("bert")
    long = "the movie was good and the music was fun but the plot was sad and slow"  # 19 maskable tokens
    result = ap.compare(model, tok, [long], methods=["raw"], reference="sampled", max_evals=12, exact_max=8)
    detail = result.details[0]
    assert "KernelSHAP regression at 12 evaluations, fewer than the tokens + 1" in detail["reference_note"]
    assert "pulled toward cplrp_mask's scores" in detail["reference_note"]
    spec = resolve(model, tok, long)
    prior = np.asarray(AttentionExplainer(model, tok, method="cplrp_mask").scores(spec)[0], float)
    with_prior, _ = estimate_shapley(spec.fn, shap.maskers.Text(tok), long, prior, 12, seed=0)
    np.testing.assert_allclose(detail["shap"], with_prior, atol=1e-6)


def test_sampled_reference_for_texts_too_long_for_exact_values():
    from attn_plugins.explain.estimators import estimate_shapley

    model, tok = tiny_bert(num_labels=3, seed=3), tiny_tokenizer("bert")
    short, long = "the movie was good", "the movie was good and the music was fun but the plot was sad and slow"
    result = ap.compare(model, tok, [short, long], methods=["raw"], reference="sampled", max_evals=40, exact_max=8)
    assert [d["reference"] for d in result.details] == ["exact", "sampled"]
    detail = result.details[1]
    assert (
        "sampled Shapley values (a balanced design with one intercept per coalition size, at 40 evaluations)"
        in detail["reference_note"]
    )
    assert detail["evaluations"] <= 40
    assert "sampled Shapley values (40 evaluations)" in result.reference_used
    # the values are the stratified estimator's (19 maskable tokens, 40 >= 20 evaluations), which needs no prior
    spec = resolve(model, tok, long)
    masker = shap.maskers.Text(tok)
    stratified, _ = estimate_shapley(spec.fn, masker, long, None, 40, seed=0, sampling="stratified")
    np.testing.assert_allclose(detail["shap"], stratified, atol=1e-6)
    # 40 >= 2p + 2 pays for the ends: the values add up to f(text) - f(every maskable token masked)
    ends = spec.fn([long, masker(np.array([True] + [False] * (len(stratified) - 2) + [True]), long)[0][0]])
    assert sum(detail["shap"]) == pytest.approx(float(ends[0] - ends[1]), abs=1e-5)
