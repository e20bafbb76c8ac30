"""A text whose tokens are all special: the explanation keeps them (it needs a token), a corpus row has no words."""

from __future__ import annotations

import numpy as np

import attn_plugins as ap
from attn_plugins.corpus.run import word_scores
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

TEXT = "[SEP] [CLS]"  # typed special tokens: from token ids every one of the four is special


def special_only():
    model, tok = tiny_bert(num_labels=2), tiny_tokenizer("bert")
    rec = ap.capture(model, tok, inputs=tok(TEXT, return_tensors="pt"))
    assert rec.tokens == ["[CLS]", "[SEP]", "[CLS]", "[SEP]"] and all(rec.special_tokens_mask)
    return model, tok, rec


def test_the_explanation_of_special_tokens_only_keeps_them():
    model, tok, rec = special_only()
    explainer = ap.AttentionExplainer(model, tok, method="rollout")
    spec = explainer.resolve(TEXT)
    np.testing.assert_array_equal(explainer.kept(spec, rec), [True] * 4)
    # a text with real tokens still leaves its special ones out
    other = ap.capture(model, tok, "the movie")
    np.testing.assert_array_equal(explainer.kept(explainer.resolve("the movie"), other), [False, True, True, False])


def test_a_corpus_row_of_special_tokens_only_has_no_words():
    _, _, rec = special_only()
    scores = ap.attribute(rec, "rollout")
    words, summed = word_scores(scores, rec.tokens, rec.word_ids, rec.offsets, TEXT, rec.special_tokens_mask)
    assert words == [] and summed.shape == (0,)
    # with two outputs per token the empty result keeps the outputs axis
    _, summed = word_scores(np.stack([scores, scores], 1), rec.tokens, None, None, TEXT, rec.special_tokens_mask)
    assert summed.shape == (0, 2)
