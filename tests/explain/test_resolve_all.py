"""Resolving many texts: the class or next token each explains is predicted in one padded forward per batch.

Each text must get the target it gets resolved alone (same class or token, same explained value), the
predictions cost one forward per ``batch_size`` texts, and nothing is left behind in the explainer's cache.
"""

from __future__ import annotations

import numpy as np
import pytest

from attn_plugins.errors import InputError
from attn_plugins.explain.explainer import AttentionExplainer
from attn_plugins.zoo import tiny_bert, tiny_model, tiny_tokenizer, tiny_vocab

TEXTS = ["the cat sat on the mat", "a dog", "the quick brown fox jumps over the lazy dog", "hello world", "big cat"]


def _classifier():
    return tiny_bert(num_labels=3), tiny_tokenizer("bert"), {}


def _llama():
    return tiny_model("llama", vocab_size=len(tiny_vocab("gpt"))), tiny_tokenizer("gpt"), {}


def _marian():
    vocab = len(tiny_vocab("seq2seq"))
    return tiny_model("marian", vocab_size=vocab, decoder_vocab_size=vocab), tiny_tokenizer("seq2seq"), {}


CASES = {"classifier": _classifier, "next_token": _llama, "seq2seq": _marian}


def _forwards(model):
    counter = {"n": 0}
    model.register_forward_pre_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
    return counter


@pytest.mark.parametrize("case", list(CASES))
def test_each_text_gets_the_target_it_gets_alone_from_one_forward_per_batch(case):
    model, tok, options = CASES[case]()
    explainer = AttentionExplainer(model, tok, method="raw", batch_size=2, **options)
    counter = _forwards(model)
    together = explainer.resolve_all(TEXTS)
    assert counter["n"] == 3  # 5 texts, 2 per batch
    alone = [explainer.resolve(t) for t in TEXTS]
    assert counter["n"] == 3 + len(TEXTS)  # one forward each
    for a, b in zip(together, alone):
        assert a.label == b.label and a.meta == b.meta and a.positions == b.positions
        # The explained value itself (the masked-text function at the unmasked text) is the same.
        np.testing.assert_allclose(a.fn([a.text]), b.fn([b.text]), rtol=0, atol=1e-6)
    assert not [k for k in explainer._targets_cache if isinstance(k, tuple) and k[0] == "logits"]


def test_a_text_too_long_is_named_and_nothing_is_left_behind():
    model, tok, options = _classifier()
    explainer = AttentionExplainer(model, tok, method="raw", max_length=12, **options)
    with pytest.raises(InputError, match="text 3"):
        explainer.resolve_all(TEXTS)
    assert not [k for k in explainer._targets_cache if isinstance(k, tuple) and k[0] == "logits"]


def test_a_given_target_and_texts_of_one_batch_agree():
    model, tok, options = _classifier()
    explainer = AttentionExplainer(model, tok, method="raw", target=2, **options)
    assert {s.meta["class"] for s in explainer.resolve_all(TEXTS)} == {2}
