"""ap.capture_generate: KV-cached generation, checked against a teacher-forced eager forward."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers.models import on_attention_interface

import attn_plugins as ap
from attn_plugins.zoo import tiny_model, tiny_tokenizer, tiny_vocab


@pytest.fixture(autouse=True)
def _quiet(quiet):
    yield


def build(model_type: str, style: str, eager: bool = False):
    v = len(tiny_vocab(style))
    extra = {"decoder_vocab_size": v} if model_type == "marian" else {}
    return tiny_model(
        model_type, peaked=None if eager else 2.0, vocab_size=v, attn_implementation="eager" if eager else None, **extra
    )


# llama: GQA; mistral: sliding-window cache (keys stop growing); gemma2: soft-capping, mixed window layers;
# bloom computes attention itself and is read through eager output_attentions (falcon too before transformers 5.25).
@pytest.mark.parametrize("model_type", ["llama", "gpt2", "mistral", "gemma2", "bloom", "falcon"])
def test_decoder_only_rows_equal_teacher_forced_eager(model_type):
    tok = tiny_tokenizer("gpt")
    model = build(model_type, "gpt")
    backend = model.config._attn_implementation
    prompt = "the movie was very"
    rec = ap.capture_generate(model, tok, prompt, max_new_tokens=6)
    rec.validate()
    assert model.config._attn_implementation == backend
    prompt_ids = tok(prompt)["input_ids"]
    with torch.no_grad():
        plain = model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id
        )
    assert rec.outputs["generated_ids"].tolist() == plain[0, len(prompt_ids) :].tolist()  # generation unchanged
    assert rec.tokens == tok.convert_ids_to_tokens(plain[0].tolist())
    assert rec.meta["generation"] == {"prompt_tokens": len(prompt_ids), "new_tokens": 6, "kv_cache": True}
    assert rec.meta["adapter"] == ("huggingface" if on_attention_interface(model_type) else "eager")
    ref_model = build(model_type, "gpt", eager=True)
    ref_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        ref = torch.stack(ref_model(plain, output_attentions=True).attentions, 1)[0]
    assert rec.attentions["self"].shape == ref.shape
    assert (rec.attentions["self"] - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("model_type", ["bart", "t5"])
def test_encoder_decoder_rows_equal_teacher_forced_eager(model_type):
    tok = tiny_tokenizer("seq2seq")
    model = build(model_type, "seq2seq")
    rec = ap.capture_generate(model, tok, "the cat sat on the road", max_new_tokens=5)
    rec.validate()
    assert rec.kinds == ["encoder", "decoder", "cross"]
    src = tok("the cat sat on the road", return_tensors="pt")["input_ids"]
    target = torch.tensor([tok.convert_tokens_to_ids(rec.target_tokens)])
    assert target[0, 0].item() == model.config.decoder_start_token_id
    assert rec.attentions["cross"].shape[2:] == (target.shape[1], src.shape[1])  # one cross row per decoder token
    ref_model = build(model_type, "seq2seq", eager=True)
    ref_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = ref_model(input_ids=src, decoder_input_ids=target, output_attentions=True)
    for kind, ref in (
        ("encoder", out.encoder_attentions),
        ("decoder", out.decoder_attentions),
        ("cross", out.cross_attentions),
    ):
        assert (rec.attentions[kind] - torch.stack(ref, 1)[0]).abs().max() <= 1e-5, kind


def test_selection_and_float16():
    tok = tiny_tokenizer("gpt")
    model = build("llama", "gpt")
    full = ap.capture_generate(model, tok, "hello there", max_new_tokens=3)
    sel = ap.capture_generate(
        model, tok, "hello there", max_new_tokens=3, layers=[1], heads=[0, 3], dtype=torch.float16
    )
    assert sel.attentions["self"].dtype == torch.float16
    assert sel.layer_ids() == [1] and sel.head_ids() == [0, 3]
    assert torch.allclose(sel.attentions["self"].float(), full.attentions["self"][1:2, [0, 3]], atol=1e-3)


def test_bad_input():
    tok = tiny_tokenizer("gpt")
    model = build("llama", "gpt")
    with pytest.raises(ap.InputError, match="empty"):
        ap.capture_generate(model, tok, "  ", max_new_tokens=3)
    with pytest.raises(ap.InputError, match="one prompt string"):
        ap.capture_generate(model, tok, ["a", "b"], max_new_tokens=3)
    with pytest.raises(ap.InputError, match="max_new_tokens"):
        ap.capture_generate(model, tok, "hello", max_new_tokens=0)
    with pytest.raises(ap.MissingCaptureError, match="values"):
        ap.capture_generate(model, tok, "hello", max_new_tokens=2, values=True)
    with pytest.raises(ap.UnsupportedModelError):
        ap.capture_generate(torch.nn.Linear(2, 2), tok, "hello", max_new_tokens=2)


def test_training_mode_warns():
    tok = tiny_tokenizer("gpt")
    model = build("llama", "gpt").train()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        with pytest.warns(UserWarning, match="training mode"):
            rec = ap.capture_generate(model, tok, "hello there", max_new_tokens=2)
    rec.validate()
