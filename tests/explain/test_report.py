"""The report's "Can this view be trusted?" section: sink heads, and disagreement with a faithful reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins import AttentionRecord, InputError
from attn_plugins.views.report import trust_section


def sink_record() -> AttentionRecord:
    """Two heads: one puts 90 % of every row on [CLS] (a sink head), one attends to the token itself."""
    n = 5
    sink = torch.full((n, n), 0.1 / (n - 1))
    sink[:, 0] = 0.9
    own = torch.eye(n)
    return AttentionRecord(
        tokens=["[CLS]", "good", "bad", "movie", "[SEP]"],
        attentions={"self": torch.stack([sink, own]).unsqueeze(0)},
        special_tokens_mask=[True, False, False, False, True],
    )


def test_sink_heads_are_reported():
    html = trust_section(sink_record(), {}, None).body
    assert "1 of 2 heads put most of their attention on special tokens" in html
    assert 'class="attn-warn"' in html


def test_methods_that_disagree_with_the_reference_are_flagged():
    rec = sink_record()
    reference = np.array([0.0, 3.0, 1.0, 0.5, 0.0])
    scores = {
        "agrees": np.array([0.2, 2.0, 1.5, 0.1, 0.9]),  # same order as the reference on real tokens
        "inverted": np.array([0.2, 0.1, 1.0, 2.0, 0.9]),  # reversed order
        "shap": reference,
    }
    html = trust_section(rec, scores, "shap").body
    assert html.count('class="attn-flag"') == 1
    assert "inverted disagrees with shap: Spearman -1.00" in html
    assert "agrees agrees with shap: Spearman 1.00" in html


def test_report_requires_the_named_reference_and_shows_the_section():
    rec = sink_record()
    page = ap.views.report(rec, {"raw": np.ones(5), "shap": np.arange(5.0)}, reference="shap")
    assert "Can this view be trusted?" in page.html
    assert "raw cannot be compared with shap: a is constant" in page.html
    with pytest.raises(InputError, match="reference 'nope' is not one of the scores"):
        ap.views.report(rec, {"raw": np.ones(5)}, reference="nope")
