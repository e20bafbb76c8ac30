"""alti: pre-LN decoders decomposed exactly (float64), by an independent computation, refusals by name, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from attn_plugins.capture.forward import select_adapter
from attn_plugins.errors import InputError, UnsupportedModelError
from attn_plugins.methods import get_method
from attn_plugins.methods.alti import decoder_contributions
from attn_plugins.methods.value_zeroing import encode_like_capture
from attn_plugins.zoo import peaked_, tiny_bert, tiny_inputs, tiny_model, tiny_tokenizer

DOUBLE = ["gpt2", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "qwen3", "gemma", "phi", "phi3", "opt", "falcon"]
FLOAT = ["mixtral", "gpt_oss"]  # their expert kernels take no float64


@pytest.mark.parametrize("model_type", DOUBLE + FLOAT)
def test_terms_sum_to_the_attention_blocks_output(model_type):
    """Σ_j T_i(x_j) + b = x_i + W_O·attention_i, the residual stream after the attention block: exactly in float64."""
    model = tiny_model(model_type, seed=1)
    if model_type in DOUBLE:
        model = model.double()
    inputs = tiny_inputs(model, batch=1, length=7)
    rec = get_method("alti").capture(model, inputs=inputs)
    assert rec.meta["alti_reconstruction_error"] < (1e-12 if model_type in DOUBLE else 1e-5)
    c = rec.extras["alti"]
    assert c.shape == (model.config.num_hidden_layers, 7, 7)
    np.testing.assert_allclose(c.sum(-1).numpy(), 1.0, atol=1e-6)
    assert torch.triu(c, 1).abs().max() == 0  # causal: no term from a later token


def _stream_after_attention(model, name: str, inputs) -> list[torch.Tensor]:
    """The input of each layer's post-attention norm: the residual stream after attention (sequential blocks)."""
    seen = []
    norms = [m for n, m in model.named_modules() if n.endswith(name)]
    hooks = [n.register_forward_pre_hook(lambda m, a: seen.append(a[0][0].detach())) for n in norms]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize(("model_type", "norm"), [("llama", "post_attention_layernorm"), ("gpt2", "ln_2")])
def test_the_decomposed_vector_is_the_models_residual_stream(model_type, norm):
    model = tiny_model(model_type, seed=2).double()
    inputs = tiny_inputs(model, batch=1, length=6)
    batch = encode_like_capture(model, None, None, inputs, {})
    out = decoder_contributions(model, select_adapter(model), batch)
    streams = _stream_after_attention(model, norm, inputs)
    assert len(streams) == len(out["terms"])
    for (terms, bias, _), stream in zip(out["terms"], streams):
        torch.testing.assert_close(terms.sum(1) + bias, stream, atol=1e-12, rtol=0)


@torch.no_grad()
def independent_llama_alti(model, ids) -> torch.Tensor:
    """ALTI from eager attention weights, v_proj outputs and o_proj weights, read with plain hooks."""
    values, inputs_ = [], []
    layers = model.model.layers
    hooks = [lay.self_attn.v_proj.register_forward_hook(lambda m, a, o: values.append(o[0].detach())) for lay in layers]
    hooks += [lay.register_forward_pre_hook(lambda m, a, k: inputs_.append(k.get("hidden_states", a[0] if a else None)[0].detach()), with_kwargs=True) for lay in layers]  # fmt: skip
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            att = model(input_ids=ids, output_attentions=True).attentions
    finally:
        model.config._attn_implementation = "sdpa"
        for h in hooks:
            h.remove()
    out = []
    cfg = model.config
    h, hk = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = cfg.hidden_size // h
    for lay, layer in enumerate(layers):
        a = att[lay][0]  # [H, T, T]
        t = a.shape[-1]
        v = values[lay].view(t, hk, dh).repeat_interleave(h // hk, dim=1)  # [T, H, dh]
        w = layer.self_attn.o_proj.weight.view(cfg.hidden_size, h, dh)
        terms = torch.einsum("hij,jhd,ehd->ije", a, v, w)
        terms = terms + torch.diag_embed(inputs_[lay].T).permute(1, 2, 0)
        y = terms.sum(1)
        c = (y.abs().sum(-1, keepdim=True) - (y[:, None] - terms).abs().sum(-1)).clamp_min(0)
        out.append(c / c.sum(-1, keepdim=True))
    return torch.stack(out)


def test_llama_against_an_independent_computation():
    model = tiny_model("llama", seed=3).double()
    ids = tiny_inputs(model, batch=1, length=6)["input_ids"]
    rec = get_method("alti").capture(model, inputs={"input_ids": ids})
    expected = independent_llama_alti(model, ids)
    np.testing.assert_allclose(rec.extras["alti"].double().numpy(), expected.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("model_type", "why"),
    [
        ("gemma2", "Gemma2ForCausalLM: its attention output is normalized"),
        ("bloom", "BloomForCausalLM: it computes attention in its own modules"),
        ("t5", "T5ForConditionalGeneration: ALTI decomposes post-LN BERT-family encoders and the pre-LN decoders"),
        ("modernbert", "ModernBertModel"),
    ],
)
def test_other_models_are_refused_by_name(model_type, why):
    model = tiny_model(model_type, seed=0)
    with pytest.raises(UnsupportedModelError, match=why):
        get_method("alti").capture(model, inputs=tiny_inputs(model, batch=1, length=5))


def test_train_mode_is_refused():
    model, tok = tiny_bert(seed=1).train(), tiny_tokenizer("bert")
    with pytest.raises(InputError, match="eval"):
        get_method("alti").capture(model, tok, "a very good movie")
    decoder = tiny_model("llama").train()
    with pytest.raises(InputError, match="eval"):
        get_method("alti").capture(decoder, inputs=tiny_inputs(decoder, batch=1, length=5))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_threads_equal_serial(family):
    texts = ["a very good movie", "the film was bad", "good", "a movie that was not good"]
    if family == "bert":
        model, tok = peaked_(tiny_bert(seed=4)), tiny_tokenizer("bert")

        def run(text):
            return get_method("alti").capture(model, tok, text).extras["alti"]

        args = texts
    else:
        model = tiny_model("llama", seed=4)

        def run(n):
            return get_method("alti").capture(model, inputs=tiny_inputs(model, batch=1, length=n)).extras["alti"]

        args = [4, 5, 6, 7]
    serial = [run(a) for a in args]
    out: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(i):
        try:
            out[i] = run(args[i])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(args))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for i, s in enumerate(serial):
        torch.testing.assert_close(out[i], s)
