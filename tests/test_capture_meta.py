"""What ap.capture writes into every record's meta, whichever adapter ran."""

from __future__ import annotations

import pytest

import attn_plugins as ap
from attn_plugins.capture import split_batch
from attn_plugins.testing import tiny_bert, tiny_tokenizer


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
    from attn_plugins.adapter import CaptureOptions
    from attn_plugins.capture import encode

    model, tok = tiny_bert(), tiny_tokenizer()
    batch = encode(model, tok, "hi")
    rec = ap.capture(model, tok, "hi")
    att = rec.attentions["self"].unsqueeze(0)
    with pytest.raises(ValueError, match="unknown optional field 'bogus'"):
        split_batch(batch, {"self": att}, options=CaptureOptions(), meta={}, extras={"bogus": {"self": att}})
