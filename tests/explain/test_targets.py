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


def test_a_left_padding_tokenizer_gives_each_text_the_row_weights_and_similarity_it_has_alone():
    """BERT's positions are absolute: a batch padded on the left would shift the shorter texts' positions."""
    from attn_plugins.explain.targets import fill_row_weights

    model, tok = tiny_bert(), tiny_tokenizer("bert")
    tok.padding_side = "left"
    texts = ["the movie was good", "a bad film", "i liked the music and the story"]
    explainer = ap.AttentionExplainer(model, tok, method="rollout", reference="a good film")
    together = [explainer.resolve(t) for t in texts]
    fill_row_weights(model, tok, together)  # one padded forward
    for text, spec in zip(texts, together):
        alone = explainer.resolve(text)  # its own forward, no padding
        # float32 forwards of different shapes: rows agree to float32 rounding (measured 3e-8)
        np.testing.assert_allclose(spec.row_weights(), alone.row_weights(), atol=1e-6)
    # the explained similarity of a padded batch (shap's evaluations) is each text's own
    np.testing.assert_allclose(together[0].fn(texts), [s.fn([s.text])[0] for s in together], atol=1e-6)
    assert tok.padding_side == "left"  # the tokenizer is left as it was
    batched = explainer(texts)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(batched.values[i], explainer(text).values[0], atol=1e-6)
