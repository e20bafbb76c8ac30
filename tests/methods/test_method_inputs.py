"""Methods check what they read; record transformations raise the package's errors only.

NaN/inf attention, gradients, value norms or extras, and attention of the wrong rank or size, make
``ap.attribute`` raise an ``ap.AttnPluginsError`` naming the field (no NaN scores, no 0-d array);
``drop_special_tokens``/``aggregate_words``/``select``/``to`` raise only the package's errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.broken import small_record

import attn_plugins as ap


def _bad(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[1] = value
    return t


BASE = small_record(n=4)
ATT = BASE.attentions["self"]
GRAD = torch.randn(ATT.shape, generator=torch.Generator().manual_seed(1))
NORMS = torch.rand(2, 2, 4, generator=torch.Generator().manual_seed(2)) + 0.5
ALTI = torch.softmax(torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(3)), -1)


def rec(**changes) -> ap.AttentionRecord:
    fields = dict(
        tokens=list(BASE.tokens),
        attentions={"self": ATT},
        special_tokens_mask=list(BASE.special_tokens_mask),
        word_ids=list(BASE.word_ids),
        gradients={"self": GRAD},
        value_norms={"self": NORMS},
        extras={"alti": ALTI},
    )
    fields.update(changes)
    return ap.AttentionRecord(**fields)


ATTENTION_METHODS = ["raw", "rollout", "flow", "grad_attention", "gae", "norm"]


def test_control_methods_give_finite_scores_on_a_valid_record():
    for method in [*ATTENTION_METHODS, "alti"]:
        scores = np.asarray(ap.attribute(rec(), method))
        assert scores.shape == (4,) and np.isfinite(scores).all(), method


def _expect_error(record: ap.AttentionRecord, method: str, field: str) -> None:
    try:
        scores = ap.attribute(record, method)
    except ap.AttnPluginsError as exc:
        assert field in str(exc), f"{method}: {field!r} not named in {exc}"
        return
    except Exception as exc:
        pytest.fail(f"{method} raised {type(exc).__name__} (not a package error): {exc}")
    scores = np.asarray(scores)
    pytest.fail(f"{method} returned {scores.shape} scores, finite={bool(np.isfinite(scores).all())}, no error")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_non_finite_attention_is_an_error_naming_attentions(method, value):
    _expect_error(rec(attentions={"self": _bad(ATT, value)}), method, "attentions")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("method", ["grad_attention", "gae"])
def test_non_finite_gradients_are_an_error_naming_gradients(method, value):
    _expect_error(rec(gradients={"self": _bad(GRAD, value)}), method, "gradients")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_value_norms_are_an_error_naming_value_norms(value):
    _expect_error(rec(value_norms={"self": _bad(NORMS, value)}), "norm", "value_norms")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_alti_extras_are_an_error_naming_extras(value):
    _expect_error(rec(extras={"alti": _bad(ALTI, value)}), "alti", "alti")


@pytest.mark.parametrize("method", ATTENTION_METHODS)
@pytest.mark.parametrize(
    "shape", [(2, 4, 4), (1, 2, 2, 4, 4), (2, 2, 5, 5)], ids=["rank3", "rank5", "5x5-for-4-tokens"]
)
def test_attention_of_wrong_rank_or_size_is_an_error(method, shape):
    att = torch.softmax(torch.randn(shape, generator=torch.Generator().manual_seed(0)), -1)
    _expect_error(rec(attentions={"self": att}, gradients={}, value_norms={}), method, "attentions")


def test_rank3_raw_does_not_return_a_0d_array():
    """The issue's example: raw on rank-3 attention returned a 0-d array."""
    att = torch.softmax(torch.randn(2, 4, 4), -1)
    try:
        scores = np.asarray(ap.attribute(rec(attentions={"self": att}), "raw"))
    except ap.AttnPluginsError:
        return
    assert scores.ndim == 1, f"raw returned a {scores.ndim}-d array: {scores!r}"


@pytest.mark.parametrize("method", ["grad_attention", "gae"])
def test_gradients_of_another_shape_are_an_error_naming_gradients(method):
    _expect_error(rec(gradients={"self": torch.ones(2, 2, 3, 3)}), method, "gradients")


def test_value_norms_of_another_shape_are_an_error_naming_value_norms():
    _expect_error(rec(value_norms={"self": torch.ones(2, 2, 3)}), "norm", "value_norms")


def test_integer_attention_is_an_error():
    _expect_error(rec(attentions={"self": torch.ones(2, 2, 4, 4, dtype=torch.int64)}), "raw", "attentions")


# ---------------------------------------------------------------------------- record transformations
TRANSFORM_CASES = {
    "attention is a list": dict(attentions={"self": ATT.tolist()}),
    "unknown kind": dict(attentions={"foo": ATT}),
    "decoder without target tokens": dict(attentions={"decoder": ATT}),
    "attention larger than the tokens": dict(attentions={"self": torch.softmax(torch.randn(2, 2, 5, 5), -1)}),
    "rank-3 attention": dict(attentions={"self": torch.softmax(torch.randn(2, 4, 4), -1)}),
    "values for 3 keys": dict(values={"self": torch.ones(2, 2, 3, 8)}),
    "word ids that are not integers": dict(word_ids=["x", "y", "z", "w"]),
    "offsets shorter than the tokens": dict(offsets=[(0, 1)], text="ab"),
    "special_tokens_mask of strings": dict(special_tokens_mask="1001"),
}


@pytest.mark.parametrize("op", ["drop_special_tokens", "aggregate_words", "select", "to"])
@pytest.mark.parametrize("case", list(TRANSFORM_CASES))
def test_record_transformations_raise_package_errors_only(case, op):
    record = rec(gradients={}, value_norms={}, extras={}, **TRANSFORM_CASES[case])
    call = {
        "drop_special_tokens": lambda r: r.drop_special_tokens(),
        "aggregate_words": lambda r: r.aggregate_words(),
        "select": lambda r: r.select(layers=[0]),
        "to": lambda r: r.to(torch.float16),
    }[op]
    try:
        out = call(record)
    except ap.AttnPluginsError:
        return
    except Exception as exc:
        pytest.fail(f"{op} raised {type(exc).__name__}: {exc}")
    out.validate()  # succeeding is fine only when what comes out is a valid record
