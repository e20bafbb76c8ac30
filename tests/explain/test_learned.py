"""The learned attributor: fitted on the model's own Shapley values, saved and loaded, bound to its model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy.stats import spearmanr

import attn_plugins as ap
from attn_plugins.bench.exact import ExactCache, text_masker
from attn_plugins.errors import InputError
from attn_plugins.explain.maskers import exact_shapley, maskable_positions, shapley_values
from attn_plugins.explain.targets import resolve
from attn_plugins.methods import get_method
from attn_plugins.zoo import tiny_bert, tiny_tokenizer
from tests.conftest import ROOT
from tests.helpers.models import minilm

WORDS = "the cat dog sat on mat good bad movie film great plot music funny paris weather is was not and".split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(3, 8)))) for _ in range(n)]


@pytest.fixture(scope="module")
def model():
    return tiny_bert(num_labels=2)


@pytest.fixture(scope="module")
def fitted(model, tok):
    return ap.fit_attributor(model, tok, _texts(12), target=1, max_exact=12)


def test_targets_are_the_models_exact_shapley_values(model, tok, fitted):
    # Fitting on values computed here (shap's Text masking, every coalition) gives the very same head.
    masker = text_masker(tok)
    given = [exact_shapley(resolve(model, tok, t, target=1).fn, masker, t) for t in _texts(12)]
    again = ap.fit_attributor(model, tok, _texts(12), target=1, shapley=given, max_exact=12)
    for key, value in fitted.head.state_dict().items():
        torch.testing.assert_close(again.head.state_dict()[key], value, rtol=0, atol=1e-12)
    assert fitted.info["training"]["targets"] == "exact Shapley values"
    assert fitted.info["training"]["model_evaluations"] == sum(
        2 ** len(maskable_positions(masker, t)[0]) for t in _texts(12)
    )
    assert fitted.info["training"]["texts"] == 8 and fitted.info["validation"]["texts"] == 4


def test_long_texts_get_seeded_stratified_estimates(model, tok):
    a = ap.fit_attributor(model, tok, _texts(8, seed=1), target=1, max_exact=2)
    b = ap.fit_attributor(model, tok, _texts(8, seed=1), target=1, max_exact=2)
    assert a.info["training"]["targets"] == "stratified-design estimates Shapley values"
    assert a.info["validation"] == b.info["validation"]  # seeded: the same estimates, the same fit


def test_round_trip_through_the_file(model, tok, fitted, tmp_path):
    path = fitted.save(tmp_path / "attributor.safetensors")
    loaded = ap.LearnedAttributor.load(path)
    assert loaded.info == json.loads(json.dumps(fitted.info))
    for key, value in fitted.head.state_dict().items():
        assert torch.equal(loaded.head.state_dict()[key], value)
    texts = _texts(3, seed=5)
    by_object = ap.explain(model, tok, texts, method=fitted, target=1)
    by_path = ap.explain(model, tok, texts, method=str(path), target=1)
    for a, b in zip(by_object.values, by_path.values):
        np.testing.assert_array_equal(a, b)
    assert by_path.method == "learned"
    assert "trained on 8 texts" in by_path.method_note and "Spearman" in by_path.method_note


def test_scores_are_relevance_plus_the_heads_correction(model, tok, fitted):
    # The head's correction is what training changed; an untrained head gives cplrp_mask's ranking.
    text = _texts(1, seed=7)[0]
    record = fitted.capture(model, tok, text, gradient_target=resolve(model, tok, text, target=1).gradient_targets[0])
    x = fitted.features(record)
    untrained = ap.LearnedAttributor(type(fitted.head)(x.shape[1]), fitted.info)
    relevance = get_method("cplrp_mask")
    ref = relevance(
        relevance.capture(model, tok, text, gradient_target=resolve(model, tok, text, target=1).gradient_targets[0])
    )
    keep = ~np.asarray(record.special_tokens_mask)
    assert spearmanr(untrained(record)[keep], ref[keep]).statistic == pytest.approx(1.0)
    assert np.all(fitted(record)[~keep] == 0) and np.all(fitted(record)[keep] != 0)  # shap never masks specials


def test_features_are_attention_from_the_explained_rows_relevance_and_products(model, tok, fitted):
    text = _texts(1, seed=7)[0]
    record = fitted.capture(model, tok, text, gradient_target=resolve(model, tok, text, target=1).gradient_targets[0])
    att = record.attentions["self"].double()  # [L, H, Q, K]
    n = att.shape[-1]
    lh = att.shape[0] * att.shape[1]
    w = np.linspace(1.0, 2.0, n)
    for position, rows in [
        ("first", att[:, :, 0]),
        ("mean", att.mean(2)),
        (w, torch.einsum("lhqk,q->lhk", att, torch.as_tensor(w))),
    ]:
        x = fitted.features(record, position)
        assert x.shape == (n, 2 * lh + 2)
        torch.testing.assert_close(x[:, :lh], rows.reshape(lh, n).T)
        r = x[:, lh]
        torch.testing.assert_close(x[:, lh + 1 : 2 * lh + 1], x[:, :lh] * r[:, None])
    keep = ~torch.as_tensor(record.special_tokens_mask)
    assert x[keep, lh].pow(2).mean().item() == pytest.approx(1.0)  # relevance on the targets' scale
    assert x[:, -1].tolist() == [float(s) for s in record.special_tokens_mask]


def test_refused_on_another_model(fitted, tok):
    other = tiny_bert(num_labels=2, seed=1)
    with pytest.raises(InputError, match="model weights differ"):
        ap.explain(other, tok, "the cat sat", method=fitted, target=1)


def test_refused_once_the_same_model_is_changed_in_place(model, fitted, tok):
    # The identity is remembered per model object (hashing every weight per batch is slow), so a change made
    # in place after a first, accepted use must still be seen: training a weight, or editing the config.
    changed = copy.deepcopy(model)
    ap.explain(changed, tok, "the cat sat", method=fitted, target=1)
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    with pytest.raises(InputError, match="model weights differ"):
        ap.explain(changed, tok, "the cat sat", method=fitted, target=1)
    changed = copy.deepcopy(model)
    ap.explain(changed, tok, "the cat sat", method=fitted, target=1)
    changed.config.layer_norm_eps = 1e-3
    with pytest.raises(InputError, match="model configuration differ"):
        ap.explain(changed, tok, "the cat sat", method=fitted, target=1)


def test_an_encoder_decoder_target_is_refused_by_name():
    from attn_plugins.zoo import tiny_model, tiny_vocab

    vocab = len(tiny_vocab("seq2seq"))
    marian = tiny_model("marian", vocab_size=vocab, decoder_vocab_size=vocab)
    with pytest.raises(InputError, match="read through cross attention .*cplrp_mask"):
        ap.fit_attributor(marian, tiny_tokenizer("seq2seq"), _texts(8), task="next_token")


def test_refused_with_another_tokenizer(model, fitted):
    other = tiny_tokenizer("bert")
    other.add_tokens(["zebra"])
    with pytest.raises(InputError, match="tokenizer vocabulary differ"):
        ap.explain(model, other, "the cat sat", method=fitted, target=1)


def test_damaged_file(fitted, tmp_path):
    path = fitted.save(tmp_path / "a.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged"):
        ap.LearnedAttributor.load(cut)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    missing = tmp_path / "missing_tensor.safetensors"
    save_file({k: v for k, v in tensors.items() if k != "net.0.bias"}, str(missing), metadata=header)
    with pytest.raises(InputError, match="damaged or another format"):
        ap.LearnedAttributor.load(missing)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(InputError, match="not a learned attributor file"):
        get_method(str(plain))
    with pytest.raises(InputError, match="no learned attributor file"):
        get_method(str(tmp_path / "missing.safetensors"))


def test_too_few_texts_says_how_many(model, tok):
    with pytest.raises(InputError, match="needs at least 8 texts .* got 7"):
        ap.fit_attributor(model, tok, _texts(7), target=1)


def test_beats_raw_attention_on_held_out_texts():
    # MiniLM's similarity to one reference (the faithful benchmark's round-robin pairing, reference 1),
    # exact Shapley values from the benchmark's cache: fitted on 'dev' texts, scored on 'test' texts.
    model, tok = minilm()
    data = json.loads((ROOT / "attn_plugins" / "bench" / "faithful_texts.json").read_text())
    cache = ExactCache(ROOT / "benchmarks" / "results" / "faithful_exact.npz")
    masker = text_masker(tok)

    def phi(item):
        players, n = maskable_positions(masker, item["text"])
        return shapley_values(cache.get(f"minilm.round_robin.{item['id']}", item["text"]), players, n), players

    chosen = [it for it in data["texts"] if it["id"] % 4 == 1]
    train = [it for it in chosen if it["split"] == "dev"]
    test = [it for it in chosen if it["split"] == "test"]
    reference = data["references"][1]
    fitted = ap.fit_attributor(
        model, tok, [it["text"] for it in train], shapley=[phi(it)[0] for it in train], reference=reference
    )
    validation = fitted.info["validation"]
    assert validation["spearman"] >= validation["baselines"]["cplrp_mask"]  # early stopping starts from it

    def held_out(method):
        e = ap.explain(model, tok, [it["text"] for it in test], method=method, reference=reference)
        return np.mean([spearmanr(v, phi(it)[0][phi(it)[1]]).statistic for it, v in zip(test, e.values)])

    learned, raw = held_out(fitted), held_out("raw")
    assert learned > raw + 0.3, (learned, raw)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"validation": 1.5}, "validation must be a share"),
        ({"hidden": -1}, "hidden must be an integer of at least 0"),
        ({"max_exact": 0}, "max_exact must be an integer of at least 1"),
        ({"shapley": [np.zeros(3)]}, "1 Shapley arrays for 8 texts"),
        ({"shapley": [np.zeros(2)] * 8}, "text 1: 2 Shapley values for its"),
    ],
)
def test_bad_options_are_named(model, tok, options, message):
    with pytest.raises(InputError, match=message):
        ap.fit_attributor(model, tok, _texts(8), target=1, **options)


def test_texts_must_be_strings(model, tok):
    with pytest.raises(InputError, match="plain texts"):
        ap.fit_attributor(model, tok, [("a", "b")] * 8, target=1)


REFERENCES = ["the movie was great", "paris weather is bad"]


@pytest.fixture(scope="module")
def encoder():
    return tiny_bert()  # a base encoder: it explains the similarity to a reference


def test_per_text_references_train_one_attributor_across_them(encoder, tok):
    # Each text's targets are its exact Shapley values for its own reference: computed here, one
    # reference per text, they give the very same head as the ones fit_attributor computes.
    texts = _texts(12, seed=2)
    refs = [REFERENCES[i % 2] for i in range(len(texts))]
    fitted = ap.fit_attributor(encoder, tok, texts, reference=refs, max_exact=12)
    masker = text_masker(tok)
    given = [exact_shapley(resolve(encoder, tok, t, reference=r).fn, masker, t) for t, r in zip(texts, refs)]
    again = ap.fit_attributor(encoder, tok, texts, reference=refs, shapley=given, max_exact=12)
    for key, value in fitted.head.state_dict().items():
        torch.testing.assert_close(again.head.state_dict()[key], value, rtol=0, atol=1e-12)
    assert fitted.info["target"]["reference"] == REFERENCES
    assert "trained on 8 texts like these" in fitted.method_note()  # 12 texts, 4 held out
    pairs = ap.fit_attributor(encoder, tok, [*texts, *texts], reference=[*refs, *refs[::-1]], max_exact=12)
    assert pairs.info["training"]["distinct_texts"] == 9
    assert "trained on 9 texts (18 text-reference pairs)" in pairs.method_note()
    # A list of one reference repeated is that reference given once.
    one = ap.fit_attributor(encoder, tok, texts, reference=[REFERENCES[0]] * len(texts), max_exact=12)
    same = ap.fit_attributor(encoder, tok, texts, reference=REFERENCES[0], max_exact=12)
    assert one.info["validation"] == same.info["validation"]
    assert one.info["validation"] != fitted.info["validation"]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (REFERENCES, "reference: 2 reference texts for 8 texts"),
        ([1] * 8, "reference: a list of reference texts must hold strings only"),
    ],
)
def test_bad_per_text_references(encoder, tok, reference, message):
    with pytest.raises(InputError, match=message):
        ap.fit_attributor(encoder, tok, _texts(8), reference=reference)


def test_a_text_under_several_references_is_held_out_whole():
    from attn_plugins.explain.learned import _split

    texts = [t for t in _texts(10, seed=3) for _ in range(3)]  # each text thrice (three references)
    val, train = _split(texts, 5, seed=0)
    assert sorted([*val, *train]) == list(range(len(texts)))
    assert not {texts[i] for i in val} & {texts[i] for i in train}
    assert len(val) == 6  # two whole texts: at least 5 asked for
    # Without repeats it is the plain seeded split (held-out share as asked).
    plain = _texts(12)
    val, train = _split(plain, 4, seed=0)
    assert list(val) == list(np.random.default_rng(0).permutation(12)[:4])


def test_too_few_distinct_texts_to_hold_out_whole(encoder, tok):
    texts = [t for t in _texts(3, seed=4) for _ in range(3)]
    with pytest.raises(InputError, match="holds out whole texts: 3 distinct texts"):
        ap.fit_attributor(encoder, tok, texts, reference=REFERENCES[:1] * len(texts))
