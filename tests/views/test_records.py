"""The records the view tests share are valid and shaped as those tests expect."""

from __future__ import annotations

from helpers.records import (
    XSS_TOKENS,
    captured_decoder,
    captured_encoder,
    captured_seq2seq,
    softmax_record,
    xss_record,
)


def test_shared_records_are_valid_and_shaped_as_the_view_tests_expect() -> None:
    for rec in (softmax_record(), xss_record(), captured_encoder(), captured_decoder(), captured_seq2seq()):
        rec.validate()
    seq = captured_seq2seq()
    assert seq.kinds == ["encoder", "decoder", "cross"]
    assert seq.attentions["encoder"].shape[:2] == (3, 4) and seq.attentions["decoder"].shape[:2] == (2, 2)
    assert captured_decoder().is_causal()
    assert set(XSS_TOKENS) <= set(xss_record().tokens)
