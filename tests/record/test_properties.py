"""Property-based tests (hypothesis) of AttentionRecord, storage and methods on random valid records.

* any valid record round-trips through ap.save/ap.load bit-exactly (tensors, dtypes, fields, meta);
* select / drop_special_tokens / aggregate_words keep every row summing to 1 within a per-dtype
  tolerance (float32, float16, bfloat16), and their results validate;
* every built-in method gives finite scores, one per key token (or a package error for a kind or
  shape it documents it cannot handle).

Runs are derandomized (a fixed sequence of examples, the same in CI), keep no example database, and
take a few seconds together.
"""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attn_plugins as ap

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Rounding a softmax row to the dtype moves its sum by at most eps/2; a transformation that
# renormalizes or re-rounds adds about as much again: 2 eps. float32: softmax and sums in float32.
ROW_TOL = {
    torch.float32: 1e-5,
    torch.float16: 2 * torch.finfo(torch.float16).eps,
    torch.bfloat16: 2 * torch.finfo(torch.bfloat16).eps,
}

token_text = st.text(min_size=0, max_size=6)  # any unicode, control characters included


def _softmax(g: torch.Generator, shape: tuple[int, ...], scale: float, causal: bool = False) -> torch.Tensor:
    logits = scale * torch.randn(shape, generator=g, dtype=torch.float64)
    if causal:
        q, k = shape[-2], shape[-1]
        logits = logits.masked_fill(~torch.ones(q, k, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(logits, -1)


def _word_ids(draw, special: list[bool]) -> list[int | None]:
    ids, word = [], -1
    for s in special:
        if s:
            ids.append(None)
        else:
            if word < 0 or draw(st.booleans()):
                word += 1
            ids.append(word)
    return ids


@st.composite
def records(draw, dtype: torch.dtype | None = None) -> ap.AttentionRecord:
    """A random valid record: single-stack (optionally causal) or encoder-decoder, with optional fields."""
    dtype = dtype or draw(st.sampled_from(DTYPES))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0, 12.0]))
    n = draw(st.integers(1, 7))
    layers, heads = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    tokens = draw(st.lists(token_text, min_size=n, max_size=n))
    special = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if all(special):
        special[draw(st.integers(0, n - 1))] = False
    seq2seq = draw(st.booleans())
    fields: dict = dict(tokens=tokens, special_tokens_mask=special, word_ids=_word_ids(draw, special))
    meta: dict = {"model_type": draw(st.sampled_from(["bert", "gpt2", "bart", "ünïcode"]))}
    if seq2seq:
        m = draw(st.integers(1, 6))
        tspecial = draw(st.lists(st.booleans(), min_size=m, max_size=m))
        if all(tspecial):
            tspecial[0] = False
        fields.update(
            target_tokens=draw(st.lists(token_text, min_size=m, max_size=m)),
            target_special_tokens_mask=tspecial,
            target_word_ids=_word_ids(draw, tspecial),
            target_text=draw(st.text(max_size=20)),
        )
        shapes = {"encoder": (n, n), "decoder": (m, m), "cross": (m, n)}
        atts = {k: _softmax(g, (layers, heads, *qk), scale, causal=(k == "decoder")) for k, qk in shapes.items()}
    else:
        causal = draw(st.booleans())
        meta["causal"] = causal
        shapes = {"self": (n, n)}
        atts = {"self": _softmax(g, (layers, heads, n, n), scale, causal=causal)}
    fields["attentions"] = {k: v.to(dtype) for k, v in atts.items()}
    if draw(st.booleans()):
        d = 4
        fields["values"] = {k: torch.randn(layers, heads, qk[1], d, generator=g).to(dtype) for k, qk in shapes.items()}
        fields["value_norms"] = {k: torch.rand(layers, heads, qk[1], generator=g).to(dtype) for k, qk in shapes.items()}
        fields["gradients"] = {k: torch.randn(layers, heads, *qk, generator=g).to(dtype) for k, qk in shapes.items()}
        fields["queries"] = {k: torch.randn(layers, heads, qk[0], d, generator=g).to(dtype) for k, qk in shapes.items()}
        fields["keys"] = {k: torch.randn(layers, heads, qk[1], d, generator=g).to(dtype) for k, qk in shapes.items()}
    if draw(st.booleans()):
        fields["outputs"] = {"logits": torch.randn(3, generator=g)}
    if draw(st.booleans()) and not seq2seq:
        fields["extras"] = {"alti": _softmax(g, (layers, n, n), 1.0).float()}
    if draw(st.booleans()):
        fields["text"] = draw(st.text(max_size=30))
    fields["meta"] = meta
    return ap.AttentionRecord(**fields)


def _assert_same(a: ap.AttentionRecord, b: ap.AttentionRecord) -> None:
    for group in ("attentions", "values", "value_norms", "queries", "keys", "gradients", "outputs", "extras"):
        ta, tb = getattr(a, group), getattr(b, group)
        assert set(ta) == set(tb), group
        for key in ta:
            assert ta[key].dtype == tb[key].dtype, (group, key)
            assert ta[key].shape == tb[key].shape, (group, key)
            assert torch.equal(
                ta[key].view(torch.uint8) if ta[key].dtype == torch.bfloat16 else ta[key],
                tb[key].view(torch.uint8) if tb[key].dtype == torch.bfloat16 else tb[key],
            ), (group, key)
    for name in (
        "tokens",
        "target_tokens",
        "word_ids",
        "target_word_ids",
        "special_tokens_mask",
        "target_special_tokens_mask",
        "text",
        "target_text",
    ):
        assert getattr(a, name) == getattr(b, name), name
    assert a.offsets == b.offsets
    assert {k: v for k, v in a.meta.items()} == {k: v for k, v in b.meta.items()}


@SETTINGS
@given(records())
def test_valid_records_round_trip_bit_exactly(rec):
    with TemporaryDirectory() as d:
        path = Path(d) / "r.attn"
        ap.save(rec, path)
        back = ap.load(path)
    _assert_same(rec, back)


def _row_error(rec: ap.AttentionRecord) -> float:
    return max(float((att.double().sum(-1) - 1).abs().max()) for att in rec.attentions.values())


TRANSFORMS = {
    "select": lambda r, data: r.select(
        layers=data.draw(st.lists(st.integers(-r.num_layers, r.num_layers - 1), min_size=1, max_size=3)),
        heads=data.draw(st.lists(st.integers(-r.num_heads, r.num_heads - 1), min_size=1, max_size=3)),
    ),
    "drop_special_tokens": lambda r, data: r.drop_special_tokens(),
    "aggregate_words": lambda r, data: r.aggregate_words(),
}


@SETTINGS
@given(st.sampled_from(DTYPES), st.sampled_from(list(TRANSFORMS)), st.data())
def test_transformations_keep_rows_summing_to_one(dtype, name, data):
    rec = data.draw(records(dtype=dtype))
    if name == "select" and len({a.shape[:2] for a in rec.attentions.values()}) > 1:
        return  # every kind here has the same layers and heads
    try:
        out = TRANSFORMS[name](rec, data)
    except ap.AttnPluginsError:
        return  # refusing (e.g. a row whose kept mass underflowed to 0) is acceptable; a wrong row is not
    for kind, att in out.attentions.items():
        assert att.dtype == dtype, kind
    assert _row_error(out) <= ROW_TOL[dtype], f"{name} {dtype}: rows off by {_row_error(out):.3g}"


@SETTINGS
@given(st.sampled_from(DTYPES), st.sampled_from(list(TRANSFORMS)), st.data())
def test_transformed_records_validate(dtype, name, data):
    rec = data.draw(records(dtype=dtype))
    rec.validate()  # the generated record itself (bfloat16 ones already fail in the snapshot)
    TRANSFORMS[name](rec, data).validate()


METHODS = ["raw", "rollout", "flow", "grad_attention", "gae", "norm", "alti"]
POSITIONS = st.one_of(st.sampled_from(["first", "last", "mean"]), st.integers(-1, 0))


@settings(SETTINGS, max_examples=30)  # flow solves max-flow problems per row: fewer, costlier examples
@given(records(), st.sampled_from(METHODS), POSITIONS)
def test_methods_give_one_finite_score_per_key_token(rec, method, position):
    m = ap.methods.get_method(method)
    kinds = [k for k in ("cross", *rec.kinds) if k in rec.attentions and k in m.kinds]
    kind = kinds[0] if kinds else None
    try:
        scores = np.asarray(ap.attribute(rec, method, position=position))
    except ap.AttnPluginsError:
        # Documented limits: a capture the record lacks (gradients, value norms, ALTI), a kind the
        # method is not defined on, or rollout-style propagation over non-square cross attention.
        return
    assert kind is not None
    keys = rec.axes(kind)[1]
    assert scores.shape == (len(keys),), (method, kind, scores.shape, len(keys))
    assert np.isfinite(scores).all(), (method, kind, scores)


@SETTINGS
@given(records(), st.sampled_from(METHODS), st.sampled_from([float("nan"), float("inf"), -float("inf")]), st.data())
def test_a_non_finite_weight_is_refused_by_every_method_naming_it(rec, method, value, data):
    kind = data.draw(st.sampled_from(rec.kinds))
    att = rec.attentions[kind].clone()
    flat = att.view(-1)
    flat[data.draw(st.integers(0, flat.numel() - 1))] = value
    rec.attentions[kind] = att
    try:
        ap.attribute(rec, method, kind=kind)
    except ap.RecordValidationError as exc:
        assert f"attentions[{kind!r}]" in str(exc)
        return
    except ap.AttnPluginsError:
        return  # a kind the method is not defined on, or a capture the record lacks: refused before reading
    raise AssertionError(f"{method} scored a record with a {value} weight in {kind} attention")
