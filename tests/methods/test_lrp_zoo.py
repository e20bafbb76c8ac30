"""attnlrp, cplrp and cplrp_mask on every zoo type: the rule table covers each, and the budget closes in float64."""

from __future__ import annotations

import warnings

import pytest
import torch

import attn_plugins as ap
from attn_plugins.errors import InputError, UnsupportedModelError
from attn_plugins.methods import get_method
from attn_plugins.methods.lrp import budget, lrp, mask_token_id
from attn_plugins.methods.rules import ROWS, add_rows, check_model
from attn_plugins.zoo import ZOO, tiny_inputs, tiny_model, tiny_tokenizer, tiny_vocab, zoo_types


def _model64(model_type, **overrides):
    """The zoo model in float64 with random biases (zero biases would hide every bias sink)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tiny_model(model_type, **overrides)
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")  # grouped_mm has no float64 kernel
    model = model.double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return model


def _target(model):
    """A simple explained scalar: a logit of the last position, or a fixed projection of the mean hidden state."""
    if ZOO[model.config.model_type][0] in ("decoder", "seq2seq", "speech"):
        return lambda out: out.logits[0, -1, 3]
    r = torch.linspace(-1, 1, model.config.hidden_size, dtype=torch.float64)
    return lambda out: out.last_hidden_state[0].mean(0) @ r


@pytest.mark.parametrize("rule", ["uniform", "detached"])
@pytest.mark.parametrize("model_type", zoo_types())
def test_the_budget_closes_on_every_type(model_type, rule):
    """f = tokens (both sides) + biases and other sinks + softmax and router leaks, to 1e-6 of f in float64.

    (bloom computes its softmax in float32 whatever the model's dtype: its residual is about 1e-7 of f.)
    """
    _closes(_model64(model_type), rule)


@pytest.mark.parametrize("rule", ["uniform", "detached"])
def test_the_budget_closes_on_deberta_with_shared_position_projections(rule):
    """share_att_key: c2p/p2c project the position table with the content's own key/query projections."""
    model = _model64("deberta-v2", share_att_key=True)
    assert not hasattr(model.encoder.layer[0].attention.self, "pos_key_proj")
    _closes(model, rule)


def _closes(model, rule):
    inputs = tiny_inputs(model, batch=1, length=7)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    b = budget(model, inputs, _target(model), rule)
    assert abs(b["f"]) > 1e-3
    assert abs(b["residual"]) <= 1e-6 * abs(b["f"]), b
    assert b["tokens"] and any(abs(v) > 0 for v in b["tokens"].values())
    if rule == "detached":
        assert b["softmax_leak"] == 0.0


def _text_setup(model_type):
    family = ZOO[model_type][0]
    style = {"decoder": "gpt", "seq2seq": "seq2seq", "encoder": "bert"}.get(family)
    tok = tiny_tokenizer(style)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tiny_model(model_type, vocab_size=len(tiny_vocab(style)))
    return model, tok, family


@pytest.mark.parametrize("method", ["attnlrp", "cplrp", "cplrp_mask"])
@pytest.mark.parametrize("model_type", [t for t in zoo_types() if ZOO[t][0] in ("encoder", "decoder", "seq2seq")])
def test_every_text_type_explains_through_the_method(model_type, method):
    model, tok, family = _text_setup(model_type)
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    target = (lambda o: o.logits[0, -1, 5]) if family != "encoder" else (lambda o: o.last_hidden_state[0, 0, 0])
    text = "the movie was good"
    rec = get_method(method).capture(model, tok, text, gradient_target=target)
    scores = ap.attribute(rec, method)
    assert scores.shape == (len(rec.tokens),) and torch.isfinite(torch.as_tensor(scores)).all()
    assert abs(scores).sum() > 0
    if family == "seq2seq" and method != "cplrp_mask":
        assert f"{method}.decoder.embedding" in rec.extras  # the decoder side, separately


def test_vision_and_speech_read_their_own_inputs():
    for model_type in ("vit", "whisper"):
        model = _model64(model_type)
        inputs = {k: v.double() if v.is_floating_point() else v for k, v in tiny_inputs(model, batch=1).items()}
        r = lrp(model, inputs, _target(model), "uniform")
        positions = 1 + (model.config.image_size // model.config.patch_size) ** 2 if model_type == "vit" else 8
        assert r.parts["embedding"].shape == (positions,)
        if model_type == "vit":
            assert r.parts["patches"][0] == 0 and r.parts["cls"][1:].abs().sum() == 0


def test_mask_baseline_uses_what_shap_masks_with():
    import shap

    gpt = tiny_tokenizer("gpt")  # no mask token: shap's Text masker puts "..." there
    assert gpt.mask_token is None
    assert mask_token_id(gpt) == shap.maskers.Text(gpt).mask_token_id == gpt.convert_tokens_to_ids(".")
    bert = tiny_tokenizer("bert")
    assert mask_token_id(bert) == bert.mask_token_id
    for style in ("bert", "gpt", "seq2seq"):  # every tokenizer style of the zoo: the same token as shap's
        tok = tiny_tokenizer(style)
        assert mask_token_id(tok) == shap.maskers.Text(tok).mask_token_id, style


def test_a_tokenizer_with_no_masking_token_is_refused():
    class NoMask:
        mask_token = None
        mask_token_id = None

        def __call__(self, *a, **k):
            raise ValueError("cannot encode")

    with pytest.raises(InputError, match="baseline=None"):
        mask_token_id(NoMask())


def test_inference_mode_is_refused_clearly():
    model, tok, _ = _text_setup("llama")
    with torch.inference_mode(), pytest.raises(InputError, match="inference_mode"):
        get_method("attnlrp").capture(model, tok, "the movie", gradient_target=lambda o: o.logits[0, -1, 0])


def test_an_unknown_module_is_refused_by_name_with_the_rows_to_add():
    class Squash(torch.nn.Module):
        def forward(self, x):
            return x.sigmoid()

    model, tok, _ = _text_setup("llama")
    model.model.layers[0].mlp.act_fn = Squash()
    adapter = __import__("attn_plugins.capture.forward", fromlist=["select_adapter"]).select_adapter(model)
    with pytest.raises(UnsupportedModelError, match=r"'model.layers.0.mlp.act_fn' \(Squash\).*add_rows\(\{'Squash'"):
        check_model(model, "uniform", adapter)
    add_rows({"Squash": "identity"})
    try:
        check_model(model, "uniform", adapter)
    finally:
        ROWS.pop("Squash")
    with pytest.raises(InputError, match="kind must be one of"):
        add_rows({"Squash": "magic"})


@pytest.mark.parametrize("head", ["ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering"])
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_linear_task_heads_of_decoders_are_covered_and_conserve(model_type, head):
    """A decoder with a classification, token-classification or QA head: the head is a linear read-out, so the
    budget closes as on the bare model (float64)."""
    import transformers
    from transformers import AutoConfig

    from attn_plugins.zoo import ZOO

    vocab = len(tiny_vocab("gpt"))
    config = AutoConfig.for_model(model_type, **{**ZOO[model_type][1], "num_labels": 2, "vocab_size": vocab})
    config.pad_token_id = 0
    prefix = {"llama": "Llama", "gpt2": "GPT2"}[model_type]
    torch.manual_seed(0)
    model = getattr(transformers, prefix + head)(config).eval().double()
    enc = tiny_tokenizer("gpt")(["the movie was good"], return_tensors="pt")
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def target(out):
        logits = out.start_logits if head == "ForQuestionAnswering" else out.logits
        return logits[0, 1] if head != "ForTokenClassification" else logits[0, -1, 1]

    for rule in ("uniform", "detached"):
        b = budget(model, inputs, target, rule)
        assert abs(b["residual"]) <= 1e-6 * abs(b["f"]), (rule, b["residual"], b["f"])


@pytest.mark.parametrize("model_type", ["vit", "whisper"])
def test_the_mask_baseline_of_images_and_audio_is_zero_and_conserves(model_type):
    """cplrp_mask on pixels and frames explains the change from zeros (what bench zoo's Shapley values mask
    with); the relevance of that change closes its budget at the midpoint like the text types' (float64)."""
    model = tiny_model(model_type).double()
    main = "pixel_values" if model_type == "vit" else "input_features"
    inputs = {main: tiny_inputs(model, batch=1)[main].double()}
    if model_type == "whisper":
        inputs["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]])

    def target(out):
        return out.last_hidden_state[0, 0, 3] if model_type == "vit" else out.logits[0, -1, 3]

    zeros = torch.zeros_like(inputs[main])
    for rule in ("uniform", "detached"):
        b = budget(model, inputs, target, rule, baseline_ids=zeros)
        assert abs(b["residual"]) <= 1e-6 * abs(b["f"]), (rule, b)
    record = get_method("cplrp_mask").capture(model, inputs={main: inputs[main]}, gradient_target=target)
    delta = record.extras["cplrp_mask.delta"]
    assert record.meta["cplrp_mask"]["attention_at"].startswith("the midpoint between zero pixels or frames")
    if model_type == "vit":
        assert delta[0] == 0 and delta[1:].abs().sum() > 0  # the class token does not change; patches do
    r = lrp(model, inputs, target, "detached", baseline_ids=zeros)
    torch.testing.assert_close(r.parts["delta"], delta.to(r.parts["delta"].dtype), rtol=1e-9, atol=1e-12)
