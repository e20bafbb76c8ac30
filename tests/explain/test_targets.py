"""A similarity target embeds its reference sentence once per explainer, not once per text."""

from __future__ import annotations

import numpy as np

import attn_plugins as ap
from attn_plugins.zoo import tiny_bert, tiny_tokenizer


def test_reference_is_embedded_once_and_values_are_unchanged():
    model, tok = tiny_bert(), tiny_tokenizer()
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        explainer = ap.AttentionExplainer(model, tok, method="rollout", reference="the dog")
        specs = [explainer.resolve(t) for t in ("a good movie", "a bad film", "the cat")]
        assert len(calls) == 1  # the reference, once
        fresh = ap.AttentionExplainer(model, tok, method="rollout", reference="the dog").resolve("a bad film")
        np.testing.assert_allclose(specs[1].fn(["a bad film"]), fresh.fn(["a bad film"]), rtol=1e-6)
    finally:
        handle.remove()
