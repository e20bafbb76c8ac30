"""A batch of texts is captured with one padded forward, and each record equals its text captured alone."""

from __future__ import annotations

import copy

import pytest
import torch

import attn_plugins as ap
from attn_plugins.zoo import peaked_, tiny_bert, tiny_tokenizer

TEXTS = ["the movie was good and the music too", "a bad film"]


@pytest.mark.parametrize("how", ["ap.capture", "Method.capture", "gradients"])
def test_two_texts_are_captured_in_one_forward(how):
    model, tok = peaked_(tiny_bert(num_labels=2)), tiny_tokenizer("bert")
    alone = [ap.capture(model, tok, t) for t in TEXTS]  # also learns the model's layout (its own forward)
    calls = []
    handle = model.register_forward_hook(
        lambda _m, args, kwargs, _out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        if how == "ap.capture":
            recs = ap.capture(model, tok, TEXTS)
        elif how == "Method.capture":
            recs = ap.get_method("rollout").capture(model, tok, TEXTS)
        else:
            recs = ap.capture(model, tok, TEXTS, gradients=True, gradient_target=1)
    finally:
        handle.remove()
    assert calls == [2], f"expected one forward of both texts, got forwards of batch sizes {calls}"
    assert isinstance(recs, list) and len(recs) == 2
    # Tolerance from this model's float32 noise: each text alone in float32 against float64.
    model64 = copy.deepcopy(model).double()
    exact = [ap.capture(model64, tok, t).attentions["self"].double() for t in TEXTS]
    noise = max(float((a.attentions["self"].double() - e).abs().max()) for a, e in zip(alone, exact))
    for rec, single, ref in zip(recs, alone, exact):
        assert rec.tokens == single.tokens
        torch.testing.assert_close(rec.attentions["self"].double(), ref, atol=4 * noise, rtol=0)
