"""Batched relevance: many texts in one padded forward and one backward of the sum of their targets.

Texts in a batch do not interact, so the gradient of the sum gives each text its own gradient: every
text must get exactly the scores it gets alone (float64: to 1e-6), and the batch costs one forward and
one backward (counted with hooks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins.adapters import BatchTarget
from attn_plugins.capture.encoding import encode
from attn_plugins.errors import InputError
from attn_plugins.explain.explainer import AttentionExplainer
from attn_plugins.explain.targets import TokenLogProb
from attn_plugins.methods import get_method
from attn_plugins.methods.lrp import lrp
from attn_plugins.zoo import tiny_bert, tiny_model, tiny_tokenizer, tiny_vocab
from tests.helpers.models import minilm

METHODS = ["attnlrp", "cplrp", "cplrp_mask", "grad_attention", "gae"]
# Different lengths (so padding), and texts the classifier puts in different classes.
TEXTS = ["the cat sat on the mat", "a dog", "the quick brown fox jumps over the lazy dog", "hello world"]


def _classifier():
    return tiny_bert(num_labels=3).double(), tiny_tokenizer("bert"), {}


def _similarity():
    model, tok = minilm()
    return model.double(), tok, {"reference": "a cat on a mat"}


def _llama():
    return tiny_model("llama", vocab_size=len(tiny_vocab("gpt"))).double(), tiny_tokenizer("gpt"), {}


def _marian():
    vocab = len(tiny_vocab("seq2seq"))
    model = tiny_model("marian", vocab_size=vocab, decoder_vocab_size=vocab).double()
    # The first generated token, read through cross attention: the decoder starts from its start token alone.
    return model, tiny_tokenizer("seq2seq"), {"task": "next_token"}


CASES = {"classifier": _classifier, "similarity": _similarity, "next_token": _llama, "seq2seq": _marian}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    model, tok, options = CASES[request.param]()
    yield request.param, model, tok, options
    model.float()  # minilm() is cached for other tests


class Counter:
    """Model forwards (a pre-hook on the model) and backward passes (torch.autograd.grad calls)."""

    def __init__(self, model, monkeypatch):
        self.forwards = self.backwards = 0
        model.register_forward_pre_hook(self._forward)
        grad = torch.autograd.grad

        def counted(*args, **kwargs):
            self.backwards += 1
            return grad(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "grad", counted)

    def _forward(self, *args):
        self.forwards += 1

    def reset(self):
        self.forwards = self.backwards = 0


@pytest.mark.parametrize("method", METHODS)
def test_batched_scores_equal_one_text_alone(case, method):
    name, model, tok, options = case
    batched = ap.explain(model, tok, TEXTS, method=method, batch_size=8, **options)
    for i, text in enumerate(TEXTS):
        alone = ap.explain(model, tok, text, method=method, **options)
        np.testing.assert_allclose(np.asarray(batched.values[i], float), alone.values[0], rtol=0, atol=1e-6)
        assert list(batched.data[i]) == list(alone.data[0])


def test_the_texts_have_their_own_targets(case):
    # The batch explains different classes / next tokens per text: each row's target is its own.
    name, model, tok, options = case
    if name in ("similarity", "seq2seq"):
        # One reference for every text; a random encoder-decoder's first token is its decoder's bias, the
        # same for every text (test_seq2seq_texts_keep_their_own_targets gives each text another token).
        return
    explainer = AttentionExplainer(model, tok, method="cplrp", **options)
    assert len({explainer.resolve(t).label for t in TEXTS}) > 1


@pytest.mark.parametrize("method", METHODS)
def test_one_forward_and_one_backward_per_batch(case, method, monkeypatch):
    name, model, tok, options = case
    counter = Counter(model, monkeypatch)
    explainer = AttentionExplainer(model, tok, method=method, **options)

    def cost(texts, batch_size):
        # Fresh specs (row weights are cached per spec); their resolution is not counted.
        specs = [explainer.resolve(t) for t in texts]
        explainer.batch_size = batch_size
        counter.reset()
        explainer.scores_batch(specs)
        return counter.forwards, counter.backwards

    cost(TEXTS[:1], 1)  # any one-time probing of the model
    forwards, backwards = cost(TEXTS[:1], 1)  # a text alone: its forwards (2 with a mask baseline)
    assert backwards == 1
    for batch_size, batches in ((len(TEXTS), 1), (2, 2)):
        assert cost(TEXTS, batch_size) == (forwards * batches, batches)


def test_seq2seq_texts_keep_their_own_targets():
    model, tok, _ = _marian()
    method = get_method("cplrp")
    targets = [TokenLogProb(0, 5 + i) for i in range(len(TEXTS))]  # another first token per text
    lengths = [len(info.tokens) for info in encode(model, tok, TEXTS).source]
    batched = method.capture(model, tok, TEXTS, gradient_target=BatchTarget(targets, lengths))
    for text, target, record in zip(TEXTS, targets, batched):
        alone = method.capture(model, tok, text, gradient_target=target)
        assert record.meta["cplrp"]["explained_value"] == pytest.approx(alone.meta["cplrp"]["explained_value"])
        for key in ("cplrp.embedding", "cplrp.decoder.embedding"):
            np.testing.assert_allclose(record.extras[key], alone.extras[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["raw", "rollout", "norm"])
def test_seq2seq_attention_rows_share_one_padded_forward(method, monkeypatch):
    # Methods that read attention rows (no gradient) batch an encoder-decoder's first token too.
    model, tok, options = _marian()
    batched = ap.explain(model, tok, TEXTS, method=method, batch_size=8, **options)
    for i, text in enumerate(TEXTS):
        alone = ap.explain(model, tok, text, method=method, **options)
        np.testing.assert_allclose(np.asarray(batched.values[i], float), alone.values[0], rtol=0, atol=1e-6)
    counter = Counter(model, monkeypatch)
    explainer = AttentionExplainer(model, tok, method=method, batch_size=2, **options)
    specs = [explainer.resolve(t) for t in TEXTS]
    counter.reset()
    explainer.scores_batch(specs)
    assert counter.forwards == 2  # two batches of two texts


def test_lrp_capture_of_a_list_needs_a_batch_target(case):
    name, model, tok, options = case
    method = get_method("cplrp")
    with pytest.raises(InputError, match="one gradient target per text"):
        method.capture(model, tok, TEXTS, gradient_target=lambda out: out[0].sum())
    explainer = AttentionExplainer(model, tok, method="cplrp", **options)
    targets = [explainer.resolve(t).gradient_targets[0] for t in TEXTS]
    with pytest.raises(InputError, match="lengths"):
        method.capture(model, tok, TEXTS, gradient_target=BatchTarget(targets, [3] * len(TEXTS)))


def test_batch_target_needs_one_length_per_target():
    with pytest.raises(InputError, match="one target and one length"):
        BatchTarget([lambda out: out.logits[0, 0]], [3, 4])
    with pytest.raises(InputError, match="one target and one length"):
        BatchTarget([], [])


def test_the_relevance_budget_is_for_one_example():
    model, tok, _ = _classifier()
    enc = tok(TEXTS[:2], padding=True, return_tensors="pt")
    target = BatchTarget([lambda out: out.logits[0, 0]] * 2, enc["attention_mask"].sum(1).tolist())
    with pytest.raises(InputError, match="one example at a time"):
        lrp(model, dict(enc), target, budget=True)
