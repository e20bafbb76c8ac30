"""AttentionRecord: validation, selection, special tokens and word aggregation against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attn_plugins import AttentionRecord, InputError, RecordValidationError


def softmax_rows(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(shape, generator=g) * 3, dim=-1)


def make(tokens: list[str], layers: int = 2, heads: int = 3, **kw) -> AttentionRecord:
    n = len(tokens)
    return AttentionRecord(tokens=tokens, attentions={"self": softmax_rows((layers, heads, n, n))}, **kw)


def test_minimal_record_is_valid_and_every_other_field_optional():
    rec = make(["a", "b", "c"])
    assert rec.validate() is rec
    assert rec.kinds == ["self"] and rec.num_layers == 2 and rec.num_heads == 3
    assert rec.meta["schema_version"] == 2  # 2: sink_mass became a field
    assert rec.word_ids is None and rec.values == {} and rec.outputs == {}


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda r: r.attentions["self"].mul_(2.0), "attentions['self']", "sum to 1"),
        (lambda r: r.attentions["self"].__setitem__((0, 0, 0, 0), float("nan")), "attentions['self']", "NaN"),
        (lambda r: r.attentions.__setitem__("self", r.attentions["self"][0]), "attentions['self']", "rank 4"),
        (lambda r: r.tokens.append("extra"), "attentions['self']", "does not match"),
        (lambda r: setattr(r, "word_ids", [0, 1]), "word_ids", "2 entries for 3 tokens"),
        (lambda r: setattr(r, "special_tokens_mask", [True]), "special_tokens_mask", "1 entries"),
        (lambda r: r.attentions.__setitem__("bogus", r.attentions["self"]), "attentions['bogus']", "unknown kind"),
        (lambda r: setattr(r, "tokens", []), "tokens", "non-empty"),
    ],
)
def test_validate_names_the_field(mutate, field, fragment):
    rec = make(["a", "b", "c"])
    mutate(rec)
    with pytest.raises(RecordValidationError) as info:
        rec.validate()
    assert info.value.field == field
    assert fragment in str(info.value)


def test_negative_weights_are_refused():
    rec = make(["a", "b"])
    att = rec.attentions["self"]
    att[0, 0, 0] = torch.tensor([1.5, -0.5])
    with pytest.raises(RecordValidationError, match="negative"):
        rec.validate()


def test_causal_rows_may_not_look_ahead():
    n = 4
    causal = torch.softmax(
        torch.randn(1, 2, n, n).masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), -1e9), -1
    )
    AttentionRecord(tokens=list("abcd"), attentions={"self": causal}, meta={"causal": True}).validate()
    leaky = softmax_rows((1, 2, n, n))
    with pytest.raises(RecordValidationError, match="future"):
        AttentionRecord(tokens=list("abcd"), attentions={"self": leaky}, meta={"causal": True}).validate()
    # the same weights are fine for a bidirectional encoder
    AttentionRecord(tokens=list("abcd"), attentions={"self": leaky}).validate()


def test_encoder_decoder_record_shapes_follow_both_sides():
    src, tgt = ["x", "y", "z"], ["<s>", "u", "v", "w"]
    rec = AttentionRecord(
        tokens=src,
        target_tokens=tgt,
        attentions={
            "encoder": softmax_rows((2, 2, 3, 3)),
            "decoder": torch.softmax(
                torch.randn(1, 2, 4, 4).masked_fill(torch.triu(torch.ones(4, 4, dtype=torch.bool), 1), -1e9), -1
            ),
            "cross": softmax_rows((1, 2, 4, 3)),
        },
    )
    rec.validate()
    assert rec.axes("cross") == (tgt, src)
    assert rec.default_kind == "encoder"
    rec.attentions["cross"] = softmax_rows((1, 2, 3, 4))
    with pytest.raises(RecordValidationError, match="cross"):
        rec.validate()
    with pytest.raises(RecordValidationError, match="target_tokens"):
        AttentionRecord(tokens=src, attentions={"cross": softmax_rows((1, 1, 2, 3))}).validate()


def test_select_layers_and_heads_keeps_original_ids():
    rec = make(["a", "b", "c"], layers=4, heads=5)
    rec.gradients["self"] = torch.randn(4, 5, 3, 3)
    sub = rec.select(layers=[1, -1], heads=[4, 0])
    assert sub.attentions["self"].shape == (2, 2, 3, 3)
    assert torch.equal(sub.attentions["self"][1, 0], rec.attentions["self"][3, 4])
    assert torch.equal(sub.gradients["self"][0, 1], rec.gradients["self"][1, 0])
    assert sub.layer_ids() == [1, 3] and sub.head_ids() == [4, 0]
    # selecting again uses the original numbers (negatives count from the end of what is held)
    assert sub.select(layers=[3]).layer_ids() == [3]
    assert sub.select(layers=[-1]).layer_ids() == [3]
    with pytest.raises(InputError, match="layer 2 out of range"):
        sub.select(layers=[2])
    assert rec.attentions["self"].shape == (4, 5, 3, 3), "the original record is untouched"
    with pytest.raises(InputError, match="out of range"):
        rec.select(heads=[5])


def test_drop_special_tokens_renormalizes_hand_case():
    a = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]]).reshape(1, 1, 3, 3)
    rec = AttentionRecord(
        tokens=["[CLS]", "hi", "[SEP]"],
        attentions={"self": a},
        special_tokens_mask=[True, False, True],
        word_ids=[None, 0, None],
    )
    out = rec.drop_special_tokens()
    assert out.tokens == ["hi"] and out.word_ids == [0]
    assert torch.allclose(out.attentions["self"], torch.ones(1, 1, 1, 1))
    raw = rec.drop_special_tokens(renormalize=False)
    assert raw.attentions["self"].item() == pytest.approx(0.6)
    out.validate()
    with pytest.raises(RecordValidationError, match="special tokens mask"):
        make(["a", "b"]).drop_special_tokens()


def test_aggregate_words_sums_keys_and_averages_queries():
    tokens = ["[CLS]", "play", "##ing", "now", "[SEP]"]
    word_ids = [None, 0, 0, 1, None]
    a = softmax_rows((1, 2, 5, 5), seed=3)
    rec = AttentionRecord(tokens=tokens, attentions={"self": a}, word_ids=word_ids, special_tokens_mask=[1, 0, 0, 0, 1])
    out = rec.aggregate_words()
    assert out.tokens == ["[CLS]", "playing", "now", "[SEP]"]
    assert out.special_tokens_mask == [True, False, False, True]
    # independent computation, one cell at a time
    groups = [[0], [1, 2], [3], [4]]
    x = a.numpy()
    expected = np.zeros((1, 2, 4, 4))
    for qi, qg in enumerate(groups):
        for ki, kg in enumerate(groups):
            expected[:, :, qi, ki] = x[:, :, qg][:, :, :, kg].sum(-1).mean(-1)
    np.testing.assert_allclose(out.attentions["self"].numpy(), expected, rtol=1e-6, atol=1e-7)
    out.validate()


def test_aggregate_words_uses_offsets_into_the_text():
    text = "Playing now"
    rec = AttentionRecord(
        tokens=["[CLS]", "play", "##ing", "now", "[SEP]"],
        attentions={"self": softmax_rows((1, 1, 5, 5))},
        word_ids=[None, 0, 0, 1, None],
        offsets=[(0, 0), (0, 4), (4, 7), (8, 11), (0, 0)],
        text=text,
    )
    assert rec.aggregate_words().tokens == ["[CLS]", "Playing", "now", "[SEP]"]
    with pytest.raises(RecordValidationError, match="word_ids"):
        make(["a"]).aggregate_words()


def test_to_float16_and_repr():
    rec = make(["a", "b"]).to(torch.float16)
    assert rec.attentions["self"].dtype == torch.float16
    assert rec.meta["dtype"] == "float16"
    rec.validate()
    assert "tokens=2" in repr(rec)


def test_a_row_whose_whole_mass_went_to_the_sink_stays_zero_when_special_tokens_are_dropped():
    """An all-sink row (sink_mass 1, nothing on any key) is exact weights, not an error: float16 rounds a
    sink share of 0.9999 to 1. Dropping special tokens leaves such a row zero (its mass is still the sink's),
    never NaN; the other rows share what their sink left."""
    for dtype in (torch.float32, torch.float16):
        # row 0: no sink; row 1: everything on the sink; row 2: a sink of 0.9999 (1.0 in float16) and the
        # rest split between the special token and "a" (float32) or all on the special token (float16)
        last = [5e-5, 5e-5, 0.0] if dtype == torch.float32 else [1e-4, 0.0, 0.0]
        att = torch.tensor([[0.5, 0.3, 0.2], [0.0, 0.0, 0.0], last])[None, None]
        sink = torch.tensor([[[0.0, 1.0, 0.9999]]])
        rec = AttentionRecord(
            tokens=["[CLS]", "a", "b"],
            attentions={"self": att.to(dtype)},
            sink_mass={"self": sink.to(dtype)},
            special_tokens_mask=[1, 0, 0],
        )
        rec.validate()  # exact weights with their sink share: every row plus its sink sums to 1
        dropped = rec.drop_special_tokens()
        a = dropped.attentions["self"].float()
        assert torch.isfinite(a).all(), f"{dtype}: NaN rows from an all-sink row"
        assert a[0, 0, 0].tolist() == [0.0, 0.0]  # row 1 ("a"): all its mass is still the sink's
        kept = 1 - dropped.sink_mass["self"].float()
        torch.testing.assert_close(a.sum(-1), kept, atol=1e-3, rtol=0)  # rows share what the sink left
        dropped.validate()
