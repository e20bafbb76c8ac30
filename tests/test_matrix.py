"""Verification matrix: captured attention of 32 tiny architectures against eager output_attentions."""

from __future__ import annotations

import warnings

import pytest

from attn_plugins.testing import verify_capture, zoo_types

# Models that compute attention themselves (not on transformers' AttentionInterface in 5.24).
OFF_INTERFACE = {"deberta-v2", "mpnet", "falcon", "bloom"}


def test_matrix_covers_the_issue_list():
    required = (
        "bert roberta distilbert albert electra deberta-v2 xlm-roberta mpnet modernbert gpt2 gpt_neox gptj llama "
        "mistral mixtral qwen2 qwen3 gemma gemma2 phi phi3 opt falcon bloom t5 bart marian mbart pegasus vit whisper"
    ).split()
    assert set(required) <= set(zoo_types())
    assert len(zoo_types()) >= 25


@pytest.mark.parametrize("model_type", zoo_types())
def test_captured_equals_eager(model_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = verify_capture(model_type)
    assert row["max_attention_diff"] <= 1e-5, row
    assert row["max_output_diff"] <= 1e-5, row
    if model_type in OFF_INTERFACE:
        assert row["adapter"] == "eager" and row["fallback"], row
    else:
        assert row["adapter"] == "huggingface" and row["fallback"] is None, row
    expected_kinds = (
        ["encoder", "decoder", "cross"]
        if model_type in ("t5", "bart", "marian", "mbart", "pegasus", "whisper")
        else ["self"]
    )
    assert row["kinds"] == expected_kinds
