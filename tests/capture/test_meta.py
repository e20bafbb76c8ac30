"""What ap.capture writes into every record's meta, whichever adapter ran."""

from __future__ import annotations

import pytest
import torch

import attn_plugins as ap
from attn_plugins.adapters import split_batch
from attn_plugins.zoo import tiny_bert, tiny_tokenizer


def test_classifier_records_carry_class_names_for_reports():
    model = tiny_bert(num_labels=2)
    model.config.id2label = {0: "NEG", 1: "POS"}
    rec = ap.capture(model, tiny_tokenizer(), "good movie")
    assert rec.meta["id2label"] == {"0": "NEG", "1": "POS"}
    predicted = rec.meta["id2label"][str(int(rec.outputs["logits"].argmax()))]
    assert ap.views.describe_output(rec).startswith(f"predicted {predicted} ")
    # a base model has default config labels but no classifier head: no class names are claimed
    assert "id2label" not in ap.capture(tiny_bert(), tiny_tokenizer(), "good movie").meta


def test_common_meta_fields():
    rec = ap.capture(tiny_bert(), tiny_tokenizer(), "good movie")
    for key in ("schema_version", "model_type", "adapter", "attention_backend", "causal", "dtype", "versions"):
        assert key in rec.meta, key
    assert rec.meta["model_dtype"] == "float32" and rec.meta["model_device"] == "cpu"
    assert rec.meta["truncated"] is False


def test_split_batch_refuses_unknown_optional_fields():
    from attn_plugins.adapters import CaptureOptions
    from attn_plugins.capture import encode

    model, tok = tiny_bert(), tiny_tokenizer()
    batch = encode(model, tok, "hi")
    rec = ap.capture(model, tok, "hi")
    att = rec.attentions["self"].unsqueeze(0)
    with pytest.raises(ValueError, match="unknown optional field 'bogus'"):
        split_batch(batch, {"self": att}, options=CaptureOptions(), meta={}, extras={"bogus": {"self": att}})


@pytest.mark.parametrize("adapter", ["huggingface", "eager"])
def test_negative_selections_are_stored_as_original_numbers(adapter):
    model, tok = tiny_bert(layers=3, heads=4), tiny_tokenizer()
    full = ap.capture(model, tok, "good movie", adapter=adapter)
    rec = ap.capture(model, tok, "good movie", adapter=adapter, layers=[-1, 0], heads=[-2])
    assert rec.layer_ids() == [2, 0] and rec.head_ids() == [2]
    # Uncaptured layers keep the backend's output while captured ones compute it from their probabilities,
    # so a selection moves later layers' weights by float rounding only.
    assert torch.allclose(rec.attentions["self"][0, 0], full.attentions["self"][2, 2], atol=1e-6)
    # the views and methods can then address them by their real numbers
    ap.views.heatmap(rec, layers=2, heads=2)
    with pytest.raises(ap.InputError, match=r"layer 3 out of range: there are 3 .*layers \(0\.\.2"):
        ap.capture(model, tok, "good movie", adapter=adapter, layers=[3])
    with pytest.raises(ap.InputError, match="head -5 out of range"):
        ap.capture(model, tok, "good movie", adapter=adapter, heads=[-5])


def test_negative_selection_through_torch_mha():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    x = torch.randn(1, 5, 16)
    rec = ap.capture(model, inputs={"inputs_embeds": x}, layers=[-1], heads=[-1])
    assert rec.layer_ids() == [1] and rec.head_ids() == [3]


@pytest.mark.parametrize(("model_type", "style"), [("llama", "gpt"), ("bloom", "gpt"), ("bart", "seq2seq")])
def test_generation_records_store_selections_as_original_numbers(model_type, style):
    from attn_plugins.zoo import tiny_model, tiny_vocab

    model, tok = tiny_model(model_type, vocab_size=len(tiny_vocab(style))), tiny_tokenizer(style)
    full = ap.capture_generate(model, tok, "the cat", max_new_tokens=2)
    rec = ap.capture_generate(model, tok, "the cat", max_new_tokens=2, layers=[-1], heads=[-1])
    for kind in rec.kinds:
        last_layer, last_head = full.layer_ids(kind)[-1], full.head_ids(kind)[-1]
        assert rec.layer_ids(kind) == [last_layer] and rec.head_ids(kind) == [last_head]
        # Selected before the forward: other layers run on the backend, equal up to float rounding.
        assert torch.allclose(rec.attentions[kind][0, 0], full.attentions[kind][last_layer, last_head], atol=1e-6)


def test_module_sites_are_found_again_after_a_module_is_replaced():
    import copy

    from attn_adapters.huggingface import _INFO

    model, tok = tiny_bert(layers=2), tiny_tokenizer()
    first = ap.capture(model, tok, "good movie", adapter="huggingface")
    key_before = _INFO[model].module_ids
    # swap layer 0's self-attention for a copy with other weights: the cached sites must not be reused
    new = copy.deepcopy(model.encoder.layer[1].attention.self)
    model.encoder.layer[0].attention.self = new
    again = ap.capture(model, tok, "good movie", adapter="huggingface")
    eager = ap.capture(model, tok, "good movie", adapter="eager")
    assert _INFO[model].module_ids != key_before
    assert torch.allclose(again.attentions["self"], eager.attentions["self"], atol=1e-6)
    assert not torch.allclose(again.attentions["self"][0], first.attentions["self"][0])
