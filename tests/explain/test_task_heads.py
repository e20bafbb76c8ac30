"""Every zoo type explains its natural target through ap.explain without task=: a similarity (bare encoders,
a bare ViT's [CLS] embedding), the next token of a causal LM, the first generated token of a seq2seq LM or
of Whisper, a ViT image class; the explained row and value are checked against a plain forward."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins.errors import InputError
from attn_plugins.explain.targets import TokenLogProb, resolve, resolve_inputs
from attn_plugins.zoo import ZOO, tiny_inputs, tiny_model, tiny_tokenizer, tiny_vocab, zoo_types

TEXT = "the movie was very good"
STYLE = {"encoder": "bert", "decoder": "gpt", "seq2seq": "seq2seq"}
GRADIENT_METHODS = ("grad_attention", "gae", "raw", "rollout")
# The task each family's natural target is, and the attention kind its rows are read from.
NATURAL = {
    "encoder": ("similarity", "self"),
    "decoder": ("next_token", "self"),
    "seq2seq": ("next_token", "cross"),
    "vision": ("similarity", "self"),
    "speech": ("next_token", "cross"),
}


@functools.cache
def pair(model_type: str):
    """A zoo model and its tokenizer (None for pixel and audio models) and, for those, one example's inputs."""
    family = ZOO[model_type][0]
    if family in STYLE:
        style = STYLE[family]
        return tiny_model(model_type, vocab_size=len(tiny_vocab(style))), tiny_tokenizer(style), None
    model = tiny_model(model_type)
    inputs = tiny_inputs(model, batch=1)
    return model, None, {k: v for k, v in inputs.items() if k in ("pixel_values", "input_features")}


def explain(model_type: str, method: str | None):
    model, tok, inputs = pair(model_type)
    if inputs is None:
        return ap.explain(model, tok, TEXT, method=method)
    return ap.explain(model, inputs=inputs, method=method)


def spec_of(model_type: str):
    model, tok, inputs = pair(model_type)
    return resolve(model, tok, TEXT) if inputs is None else resolve_inputs(model, inputs)


@pytest.mark.parametrize("model_type", zoo_types())
def test_each_type_explains_its_natural_target_with_every_gradient_method(model_type):
    model, tok, inputs = pair(model_type)
    family = ZOO[model_type][0]
    spec = spec_of(model_type)
    assert (spec.task, spec.kind) == NATURAL[family]
    # The explained row, read by hand from a plain capture of the same input: raw attention at that row.
    if spec.inputs is not None:
        record = ap.capture(model, tok, inputs=spec.inputs)
    else:
        record = ap.capture(model, tok, TEXT)
    keep = ~np.asarray(spec.special if spec.special is not None else record.special_tokens_mask, dtype=bool)
    # A mean-pooled similarity reads its rows weighted by their share (tested in test_explainer.py).
    position = ap.AttentionExplainer(model, tok, method="raw").positions(spec)[0]
    assert spec.task == "similarity" or position == spec.positions[0]
    expected_raw = ap.attribute(record, "raw", position=position, kind=spec.kind)[keep]
    for method in GRADIENT_METHODS:
        e = explain(model_type, method)
        assert e.method == method and e.method_choice is None
        values = np.asarray(e.values[0], dtype=float)
        assert values.shape == (int(keep.sum()),) and np.isfinite(values).all()
        assert len(e.feature_names[0]) == len(values)
        if method == "raw":
            np.testing.assert_allclose(values, expected_raw, rtol=1e-6, atol=1e-7)
    # The default picks a method and says so.
    default = explain(model_type, None)
    assert default.method == default.method_choice["method"]
    assert np.isfinite(np.asarray(default.values[0], dtype=float)).all()


def _hand_log_prob(model, enc, row):
    with torch.no_grad():
        logp = torch.log_softmax(model(**enc).logits[0, row], -1)
    return int(logp.argmax()), float(logp.max())


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "marian", "t5"])
def test_the_next_token_is_the_most_probable_one_and_its_log_probability_is_explained(model_type):
    model, tok, _ = pair(model_type)
    spec = resolve(model, tok, TEXT)
    enc = tok(TEXT, return_tensors="pt")
    if model.config.is_encoder_decoder:
        # The first generated token: the decoder reads only its start token.
        enc = {**enc, "decoder_input_ids": torch.tensor([[model.config.decoder_start_token_id]])}
        row = 0
        assert spec.inputs["decoder_input_ids"].tolist() == [[model.config.decoder_start_token_id]]
    else:
        row = enc["input_ids"].shape[1] - 1
    tid, value = _hand_log_prob(model, {k: v for k, v in enc.items() if k != "token_type_ids"}, row)
    assert spec.positions == [row] and spec.meta["token_id"] == tid
    assert spec.fn([TEXT])[0] == pytest.approx(value, abs=1e-5)
    with torch.no_grad():
        out = model(**(spec.inputs if spec.inputs is not None else tok(TEXT, return_tensors="pt")))
    assert float(spec.gradient_targets[0](out)) == pytest.approx(value, abs=1e-5)
    if not model.config.is_encoder_decoder:
        # Padded on the right (after the text, so its positions do not move), the last real row is read.
        right = copy.deepcopy(tok)
        right.padding_side = "right"
        padded = resolve(model, right, TEXT)
        assert padded.fn([TEXT, TEXT + " and the cat saw a dog"])[0] == pytest.approx(value, abs=1e-5)
    # target= picks another token.
    other = resolve(model, tok, TEXT, target=7)
    assert other.meta["token_id"] == 7 and other.fn([TEXT])[0] < value


def test_the_linear_form_of_a_log_probability_has_its_value_and_gradient():
    torch.manual_seed(0)
    z = torch.randn(1, 3, 11, dtype=torch.float64, requires_grad=True)
    out = type("Out", (), {"logits": z})()
    target = TokenLogProb(row=1, token=4)
    exact = target(out)
    (g_exact,) = torch.autograd.grad(exact, z)
    linear = target.relevance(out)
    (g_linear,) = torch.autograd.grad(linear, z)
    assert float(linear) == pytest.approx(float(torch.log_softmax(z[0, 1], -1)[4]), abs=1e-12)
    assert float(linear) == pytest.approx(float(exact), abs=1e-12)
    torch.testing.assert_close(g_linear, g_exact, rtol=0, atol=1e-12)
    # Linear in the logits: its gradient does not depend on them (no graph from the gradient back to z).
    (g_graph,) = torch.autograd.grad(target.relevance(out), z, create_graph=True)
    assert not g_graph.requires_grad
    (g_exact_graph,) = torch.autograd.grad(target(out), z, create_graph=True)
    assert g_exact_graph.requires_grad  # while the log-probability itself is not linear


def test_max_new_tokens_still_explains_each_generated_token():
    model, tok, _ = pair("gpt2")
    e = ap.explain(model, tok, TEXT, method="raw", max_new_tokens=3)
    assert np.asarray(e.values[0]).shape[-1] == 3
    assert resolve(model, tok, TEXT, max_new_tokens=3).task == "generation"
    assert resolve(model, tok, TEXT, task="generation").task == "generation"
    model, tok, _ = pair("marian")
    assert resolve(model, tok, TEXT, max_new_tokens=2).task == "seq2seq"


def test_a_vit_classifier_explains_its_class_over_patches():
    from transformers import ViTForImageClassification

    bare, _, inputs = pair("vit")
    torch.manual_seed(0)
    model = ViTForImageClassification(bare.config.__class__(**{**bare.config.to_dict(), "num_labels": 3})).eval()
    spec = resolve_inputs(model, inputs)
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    assert spec.task == "classification" and spec.meta["class"] == int(logits.argmax())
    e = ap.explain(model, inputs=inputs, method="grad_attention")
    side = bare.config.image_size // bare.config.patch_size
    assert e.feature_names[0] == [f"patch ({r}, {c})" for r in range(side) for c in range(side)]
    record = ap.capture(model, None, inputs=inputs)
    np.testing.assert_allclose(
        ap.explain(model, inputs=inputs, method="raw").values[0], ap.attribute(record, "raw", "first")[1:], rtol=1e-6
    )
    with torch.no_grad():
        out = model(**inputs)
    assert float(spec.gradient_targets[0](out)) == pytest.approx(float(logits.max()), abs=1e-6)


def test_whisper_explains_its_first_token_over_encoder_frames():
    model, _, inputs = pair("whisper")
    spec = resolve_inputs(model, inputs)
    frames = inputs["input_features"].shape[-1]
    assert spec.feature_names == [f"frames {2 * i}-{2 * i + 1}" for i in range(frames // 2)]
    with torch.no_grad():
        start = torch.tensor([[model.config.decoder_start_token_id]])
        logp = torch.log_softmax(model(**inputs, decoder_input_ids=start).logits[0, 0], -1)
    assert spec.meta["token_id"] == int(logp.argmax())
    with torch.no_grad():
        out = model(**spec.inputs)
    assert float(spec.gradient_targets[0](out)) == pytest.approx(float(logp.max()), abs=1e-5)


def test_inputs_that_are_wrong_get_one_clear_error():
    vit, _, pixels = pair("vit")
    bert, tok, _ = pair("bert")
    with pytest.raises(InputError, match="reads pixel_values, not text"):
        ap.explain(vit, tok, TEXT, method="raw")
    with pytest.raises(InputError, match="not both or neither"):
        ap.explain(vit, method="raw")
    with pytest.raises(InputError, match="not both or neither"):
        ap.explain(bert, tok, TEXT, inputs={"input_ids": torch.ones(1, 3, dtype=torch.long)}, method="raw")
    with pytest.raises(InputError, match="reads text"):
        ap.explain(bert, tok, inputs={"input_ids": torch.ones(1, 3, dtype=torch.long)}, method="raw")
    with pytest.raises(InputError, match="'pixel_values' tensor"):
        ap.explain(vit, inputs={"input_features": torch.ones(1, 3)}, method="raw")
    with pytest.raises(InputError, match="holds 2 examples"):
        ap.explain(vit, inputs={"pixel_values": pixels["pixel_values"].repeat(2, 1, 1, 1)}, method="raw")
    with pytest.raises(InputError, match="max_new_tokens"):
        ap.explain(vit, inputs=pixels, method="raw", max_new_tokens=2)
    with pytest.raises(InputError, match="not explained from inputs="):
        ap.explain(vit, inputs=pixels, method="raw", task="generation")
    with pytest.raises(InputError, match="needs the model's tokenizer"):
        ap.explain(bert, None, TEXT, method="raw")


@pytest.mark.parametrize("model_type", zoo_types())
def test_the_default_is_the_most_faithful_method_on_every_type(model_type):
    """Relevance of the change from the masked input on every type: the masked text (its source tokens for
    encoder-decoders), zero pixels for ViT, zero frames for Whisper."""
    default = explain(model_type, None)
    assert default.method == "cplrp_mask", default.method_note
