"""Diagnostics on hand-built records whose entropies and sink masses are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attn_plugins import AttentionRecord
from attn_plugins.errors import InputError, RecordValidationError
from attn_plugins.metrics.diagnostics import diagnose, disagreement, head_entropy, special_token_mass


def _record() -> AttentionRecord:
    uniform = torch.full((4, 4), 0.25)
    sink = torch.zeros(4, 4)
    sink[:, 3] = 1.0  # every query looks at [SEP]
    middle = torch.zeros(4, 4)
    middle[:, 1:3] = 0.5
    att = torch.stack([uniform, sink, middle])[None]  # [1, 3, 4, 4]
    return AttentionRecord(
        tokens=["[CLS]", "a", "b", "[SEP]"], attentions={"self": att}, special_tokens_mask=[True, False, False, True]
    ).validate()


def test_entropy_by_hand() -> None:
    ent = head_entropy(_record())
    np.testing.assert_allclose(ent, [[1.0, 0.0, 0.5]], atol=1e-6)  # log 2 / log 4 for the middle head
    raw = head_entropy(_record(), normalized=False)
    np.testing.assert_allclose(raw, [[math.log(4), 0.0, math.log(2)]], atol=1e-6)


def test_causal_rows_normalize_by_visible_keys() -> None:
    a = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])[None, None]
    rec = AttentionRecord(tokens=["x", "y", "z"], attentions={"self": a}, meta={"causal": True}).validate()
    # row 0 sees one key and is skipped; rows 1 and 2 are uniform over what they see
    np.testing.assert_allclose(head_entropy(rec), [[1.0]], atol=1e-6)
    np.testing.assert_allclose(head_entropy(rec, normalized=False), [[(math.log(2) + math.log(3)) / 3]], atol=1e-6)


def test_special_mass_by_hand_and_separators() -> None:
    np.testing.assert_allclose(special_token_mass(_record()), [[0.5, 1.0, 0.0]], atol=1e-6)
    rec = _record()
    rec.tokens = ["[CLS]", ".", "b", "[SEP]"]  # a period counts as a sink too (Clark et al. 2019)
    np.testing.assert_allclose(special_token_mass(rec), [[0.75, 1.0, 0.5]], atol=1e-6)
    np.testing.assert_allclose(special_token_mass(rec, separators=()), [[0.5, 1.0, 0.0]], atol=1e-6)


def test_diagnose_lists_heads_and_warnings() -> None:
    d = diagnose(_record().select(heads=[0, 1, 2]))
    assert d.diffuse_heads == [(0, 0)]
    assert d.sink_heads == [(0, 0), (0, 1)]
    assert len(d.warnings) == 2 and "sink heads" in d.warnings[0]
    out = d.to_dict()
    assert out["special_mass"] == [[0.5, 1.0, 0.0]]
    # original head numbers survive a selection
    assert diagnose(_record().select(heads=[1])).sink_heads == [(0, 1)]
    assert diagnose(_record(), sink_threshold=0.9).sink_heads == [(0, 1)]


def test_disagreement_flags_reversed_ranking() -> None:
    view = [1, 2, 3, 4, 5, 6]
    bad = disagreement(view, view[::-1], k=2)
    assert bad.flagged and bad.spearman == pytest.approx(-1.0) and bad.top_k_overlap == 0.0
    assert "disagrees" in bad.message
    good = disagreement(view, [1, 2, 3, 4, 6, 5], k=2)
    assert not good.flagged and good.top_k_overlap == 1.0
    assert good.to_dict()["k"] == 2


def test_diagnostics_bad_input() -> None:
    with pytest.raises(RecordValidationError, match="no 'cross' attention"):
        head_entropy(_record(), kind="cross")
    with pytest.raises(InputError, match="NaN"):
        disagreement([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="a has 3 entries but b has 2"):
        disagreement([1.0, 2.0, 3.0], [1.0, 2.0])
    one = AttentionRecord(tokens=["x"], attentions={"self": torch.ones(1, 1, 1, 1)})
    with pytest.raises(InputError, match="single key"):
        head_entropy(one)
