"""bfloat16 and float16 records: every way of making one validates, renders and round-trips (tolerance per dtype)."""

from __future__ import annotations

import pytest
import torch
from helpers.broken import texts_of_lengths

import attn_plugins as ap
from attn_plugins.zoo import tiny_tokenizer

DTYPES = [torch.bfloat16, torch.float16]
TEXTS = texts_of_lengths([1, 4, 25])

MAKERS = {
    "capture": lambda m, tok, t, dt: ap.capture(m, tok, t, dtype=dt),
    "to": lambda m, tok, t, dt: ap.capture(m, tok, t).to(dt),
    "select": lambda m, tok, t, dt: ap.capture(m, tok, t, dtype=dt).select(layers=[-1], heads=[0, 2]),
    "drop_special_tokens": lambda m, tok, t, dt: ap.capture(m, tok, t, dtype=dt).drop_special_tokens(),
    "aggregate_words": lambda m, tok, t, dt: ap.capture(m, tok, t, dtype=dt).aggregate_words(),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("maker", list(MAKERS))
def test_low_precision_records_validate(classifier, dtype, maker):
    for text in TEXTS:
        rec = MAKERS[maker](classifier, tiny_tokenizer(), text, dtype)
        assert rec.attentions["self"].dtype == dtype
        rec.validate()  # was: bfloat16 "rows must sum to 1 (worst row is off by 0.0023…)"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("view", ["head_view", "model_view", "heatmap", "report"])
def test_views_render_low_precision_records(classifier, dtype, view):
    rec = ap.capture(classifier, tiny_tokenizer(), TEXTS[1], dtype=dtype)
    page = getattr(ap.views, view)(rec)
    assert "<html" in page.html


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_low_precision_records_round_trip_and_validate(classifier, dtype, tmp_path):
    rec = ap.capture(classifier, tiny_tokenizer(), TEXTS[2], dtype=dtype)
    ap.save(rec, tmp_path / "r.attn")
    back = ap.load(tmp_path / "r.attn")
    assert back.attentions["self"].dtype == dtype
    assert torch.equal(back.attentions["self"], rec.attentions["self"])
    back.validate()


def test_tolerance_follows_the_precision_of_the_dtype():
    from attn_plugins.record.record import row_tolerance

    assert row_tolerance(torch.float32) == 1e-4
    assert row_tolerance(torch.float16) == pytest.approx(2 * 2**-10)
    assert row_tolerance(torch.bfloat16) == pytest.approx(2 * 2**-7)
    # Still strict enough to refuse rows that are really off: 3 % in bfloat16, 0.5 % in float16.
    for dtype, off in ((torch.bfloat16, 1.03), (torch.float16, 1.005)):
        att = torch.full((1, 1, 2, 2), 0.5 * off).to(dtype)
        with pytest.raises(ap.RecordValidationError, match="sum to 1"):
            ap.AttentionRecord(tokens=["a", "b"], attentions={"self": att}).validate()


def test_float16_drop_special_tokens_renormalizes_subnormal_rows():
    """A kept mass below float16's smallest normal (6.1e-5) was clamped up to it: the row summed to 0.029."""
    att = torch.tensor(
        [[[[1.7881e-06, 4.1046e-03, 9.9589e-01], [0.2, 0.3, 0.5], [0.5, 0.25, 0.25]]]], dtype=torch.float16
    )
    rec = ap.AttentionRecord(
        tokens=["w", "[SEP]", "[PAD]"], attentions={"self": att}, special_tokens_mask=[False, True, True]
    )
    rec.validate()
    dropped = rec.drop_special_tokens()
    row_sums = dropped.attentions["self"].double().sum(-1)
    assert torch.allclose(row_sums, torch.ones_like(row_sums), atol=2e-3), row_sums
    dropped.validate()


def test_a_row_that_kept_no_weight_is_an_error_naming_it():
    att = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]], dtype=torch.float16)
    rec = ap.AttentionRecord(tokens=["w", "[SEP]"], attentions={"self": att}, special_tokens_mask=[False, True])
    with pytest.raises(ap.RecordValidationError, match=r"attentions\['self'\]: row 0 of layer 0, head 0"):
        rec.drop_special_tokens()
    # Without renormalizing the zero row is kept, and the record still validates (rows of at most 1).
    rec.drop_special_tokens(renormalize=False).validate()
