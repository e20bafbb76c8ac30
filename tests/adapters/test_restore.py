"""A capture leaves every config of a model as it found it, and follows a backend switched between captures."""

from __future__ import annotations

import pytest
import torch

import attn_plugins as ap
from attn_adapters.eager import all_configs
from attn_plugins.zoo import peaked_, tiny_inputs, tiny_model, tiny_tokenizer, tiny_vocab


def backends(model: torch.nn.Module) -> list[tuple[int, str | None]]:
    return [(id(c), c._attn_implementation_internal) for c in all_configs(model)]


@pytest.mark.parametrize("how", ["fast", "gradients", "eager adapter"])
def test_every_sub_config_of_an_encoder_decoder_is_restored(how):
    """T5's encoder and decoder stacks hold configs of their own: each gets its backend back, not only the top one."""
    model = tiny_model("t5")
    configs = all_configs(model)
    assert len(configs) == 3  # the model's, the encoder stack's, the decoder stack's
    # Different backends per sub-config, so restoring one config's value to another would show too.
    model.encoder.config._attn_implementation_internal = "eager"
    before = backends(model)
    inputs = tiny_inputs(model, batch=1)
    options = {"gradients": True, "gradient_target": 0} if how == "gradients" else {}
    rec = ap.capture(model, inputs=inputs, adapter="eager" if how == "eager adapter" else None, **options)
    assert set(rec.attentions) == {"encoder", "decoder", "cross"}
    assert backends(model) == before


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_a_backend_switched_between_two_captures_is_the_one_used(monkeypatch, model_type):
    """eager, then sdpa (model.set_attn_implementation), then back: each capture reads the current backend.

    GPT-2 on sdpa gets no mask for its causal rows (the capture applies causality itself), on eager a
    mask: a capture that kept the earlier backend would get one of them wrong.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    real_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    sdpa_calls = []
    monkeypatch.setitem(
        ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", lambda *a, **k: sdpa_calls.append(1) or real_sdpa(*a, **k)
    )
    style = "bert" if model_type == "bert" else "gpt"
    model, tok = peaked_(tiny_model(model_type, vocab_size=len(tiny_vocab(style)))), tiny_tokenizer(style)
    assert model.config._attn_implementation == "sdpa"
    text = "the movie was good"
    enc = tok(text, return_tensors="pt")
    model.set_attn_implementation("eager")
    first = ap.capture(model, tok, text)  # the model learned on eager first
    for backend in ("sdpa", "eager", "sdpa"):
        model.set_attn_implementation(backend)
        sdpa_calls.clear()
        rec = ap.capture(model, tok, text, layers=[0])  # the other layers run the model's own backend
        assert rec.meta["attention_backend"] == backend
        assert bool(sdpa_calls) == (backend == "sdpa"), "an uncaptured layer ran another backend"
        assert model.config._attn_implementation == backend  # left as the user set it
        torch.testing.assert_close(rec.attentions["self"][0], first.attentions["self"][0], atol=1e-6, rtol=0)
        if backend == "eager":  # eager's own weights: the reference every capture must equal
            with torch.no_grad():
                eager_ref = model(**enc, output_attentions=True).attentions[0][0]
            torch.testing.assert_close(rec.attentions["self"][0], eager_ref, atol=1e-6, rtol=0)
