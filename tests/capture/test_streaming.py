"""Streaming reducers equal the same reduction over a full capture, for encoders, decoders and seq2seq models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins import AttentionRecord
from attn_plugins.capture import HeadEntropy, HeadReduce, RolloutReducer, TopK, stream
from attn_plugins.errors import InputError, UnsupportedModelError
from attn_plugins.methods.raw import RawAttention
from attn_plugins.methods.rollout import Rollout
from attn_plugins.metrics.diagnostics import head_entropy
from attn_plugins.zoo import tiny_bert, tiny_inputs, tiny_model, tiny_tokenizer

TEXTS = ["the movie was good", "a very long and boring film about a cat and a dog , really"]


def _reducers() -> list:
    return [
        RolloutReducer(),
        HeadReduce("mean"),
        HeadReduce("max", layer_reduce="mean"),
        HeadEntropy(),
        HeadEntropy(normalized=False),
        TopK(3),
    ]


def _check_against_record(result: dict, rec: AttentionRecord, kind: str) -> None:
    att = rec.attentions[kind].double()
    if kind != "cross":
        np.testing.assert_allclose(result["rollout"][kind], Rollout()(rec, "all", kind=kind), atol=1e-6)
    np.testing.assert_allclose(result["head_mean"][kind], att.mean(1).numpy(), atol=1e-6)
    raw_max = RawAttention()(rec, "all", kind=kind, head_reduce="max")
    np.testing.assert_allclose(result["head_max_layer_mean"][kind], raw_max, atol=1e-6)
    # Reference for the entropies: the diagnostics module computes them from a full record.
    np.testing.assert_allclose(result["head_entropy"][kind], head_entropy(rec, kind), atol=1e-5)
    np.testing.assert_allclose(result["head_entropy_raw"][kind], head_entropy(rec, kind, normalized=False), atol=1e-5)
    top = result["top_3"][kind]
    values, _ = torch.topk(rec.attentions[kind], min(3, att.shape[-1]), dim=-1)
    np.testing.assert_allclose(top.values, values.numpy(), atol=1e-6)
    # Indices point at real tokens: the record's weight at each index is the reported value.
    gathered = torch.gather(rec.attentions[kind], -1, torch.from_numpy(top.indices).long())
    np.testing.assert_allclose(gathered.numpy(), top.values, atol=1e-6)


def _stream_names() -> list:
    reds = _reducers()
    reds[4].name = "head_entropy_raw"
    return reds


def test_encoder_padded_batch_equals_full_capture() -> None:
    model, tok = tiny_bert(), tiny_tokenizer("bert")
    streamed = stream(model, tok, TEXTS, _stream_names())
    records = ap.capture(model, tok, TEXTS)
    assert len(streamed) == 2
    for res, rec in zip(streamed, records):
        assert res.tokens == rec.tokens  # padding removed, as in the records
        _check_against_record(res.results, rec, "self")


# albert reuses one module for every layer; gemma2 soft-caps (the adapter computes its own output); modernbert
# mixes sliding-window and global layers.
@pytest.mark.parametrize("model_type", ["llama", "bart", "albert", "gemma2", "modernbert"])
def test_causal_left_padding_and_encoder_decoder(model_type: str) -> None:
    model = tiny_model(model_type)
    inputs = tiny_inputs(model)  # the second example is padded (left for llama)
    streamed = stream(model, inputs=inputs, reducers=_stream_names())
    records = ap.capture(model, inputs=inputs)
    for res, rec in zip(streamed, records):
        for kind in rec.kinds:
            _check_against_record(res.results, rec, kind)
        assert ("cross" in res.results["rollout"]) is False  # rollout streams square kinds only


def test_reducers_fed_by_hand_equal_reduction_of_a_record() -> None:
    g = torch.Generator().manual_seed(3)
    att = torch.softmax(torch.randn(3, 2, 5, 5, generator=g) * 3, dim=-1)  # [L, H, Q, K]
    rec = AttentionRecord(tokens=list("abcde"), attentions={"self": att})
    roll, mean = RolloutReducer(residual=0.3), HeadReduce("mean", layers=[0, 2])
    for layer in range(3):
        for r in (roll, mean):
            r.update("self", layer, att[layer][None], torch.ones(1, 5))
    np.testing.assert_allclose(roll.results()[0]["self"], Rollout()(rec, "all", residual=0.3), atol=1e-10)
    np.testing.assert_allclose(mean.results()[0]["self"], att[[0, 2]].double().mean(1).numpy(), atol=1e-7)


def test_padding_holding_nan_never_leaks() -> None:
    g = torch.Generator().manual_seed(0)
    att = torch.softmax(torch.randn(2, 2, 4, 4, generator=g), dim=-1)
    probs = att[:, None].repeat(1, 2, 1, 1, 1)  # [L, B=2, H, Q, K]
    probs[:, 1, :, :, 3] = 0.0
    probs[:, 1] /= probs[:, 1].sum(-1, keepdim=True)
    probs[:, 1, :, 3, :] = float("nan")  # a fully masked padding row under an additive mask
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    roll = RolloutReducer()
    for layer in range(2):
        roll.update("self", layer, probs[layer], mask)
    out = roll.results()
    assert out[1]["self"].shape == (3, 3)
    assert np.isfinite(out[1]["self"]).all()
    np.testing.assert_allclose(out[1]["self"].sum(-1), 1.0, atol=1e-9)


def test_bad_input_is_reported() -> None:
    r = RolloutReducer()
    probs = torch.full((1, 1, 3, 3), 1 / 3)
    with pytest.raises(InputError, match="expected layer 0"):
        r.update("self", 1, probs, torch.ones(1, 3))
    with pytest.raises(InputError, match="mask must be"):
        r.update("self", 0, probs, torch.ones(1, 4))
    with pytest.raises(InputError, match="batch, heads, queries, keys"):
        HeadReduce().update("self", 0, probs[0], None)
    with pytest.raises(InputError, match="cannot stream 'cross'"):
        RolloutReducer(kinds=["cross"])
    with pytest.raises(InputError, match="non-negative"):
        HeadReduce(layers=[-1])
    with pytest.raises(InputError, match="head_reduce must be one of 'mean', 'max', 'min', 'sum'"):
        HeadReduce("median")
    with pytest.raises(InputError, match="positive integer"):
        TopK(0)
    with pytest.raises(InputError, match="query_mask"):
        HeadReduce().update("cross", 0, torch.full((1, 1, 2, 3), 1 / 3), torch.ones(1, 3))
    model, tok = tiny_bert(), tiny_tokenizer("bert")
    with pytest.raises(InputError, match="at least one reducer"):
        stream(model, tok, "the movie", [])
    with pytest.raises(InputError, match="unique"):
        stream(model, tok, "the movie", [HeadReduce(), HeadReduce()])


def test_models_off_the_interface_stream_through_the_eager_adapter() -> None:
    # bloom computes attention itself, not through AttentionInterface: the eager adapter listens instead,
    # handing over output_attentions after the forward, and the reductions equal those of a full capture.
    model = tiny_model("bloom")
    inputs = tiny_inputs(model, batch=2)
    streamed = stream(model, inputs=inputs, reducers=[RolloutReducer(), HeadEntropy()])
    records = ap.capture(model, inputs=inputs)
    for result, record in zip(streamed, records):
        rollout = ap.attribute(record, "rollout", position=list(range(len(record.tokens))))
        np.testing.assert_allclose(result.results["rollout"]["self"], rollout, atol=1e-6)
        np.testing.assert_allclose(result.results["head_entropy"]["self"], head_entropy(record), atol=1e-5)


def test_an_adapter_that_cannot_listen_is_refused() -> None:
    from attn_plugins.adapters import Adapter

    class Silent(Adapter):
        name = "silent"

        def supports(self, model):
            return getattr(model, "silent_test_model", False)  # only this test's model, never another test's

        def capture(self, model, batch, options):
            return []

    class Plugin:
        @ap.hookimpl
        def attn_plugins_register_adapters(self, register):
            register("silent", Silent())

    ap.register_plugin(Plugin(), name="silent-adapter")
    model = tiny_bert()
    model.silent_test_model = True
    with pytest.raises(UnsupportedModelError, match="cannot hand over attention"):
        stream(model, tiny_tokenizer("bert"), "the movie", [RolloutReducer()], adapter="silent")


@pytest.mark.parametrize("block_bytes", [None, 64])
def test_rollout_streamed_from_a_sink_model_keeps_the_sink_share_missing(block_bytes) -> None:
    """gpt-oss style sinks: the streamed rollout equals the rollout method on the captured record (which keeps
    the sink's share as missing mass), whole layers or row blocks."""
    model = tiny_model("gpt_oss")
    inputs = tiny_inputs(model, batch=1)
    rec = ap.capture(model, inputs=inputs)
    assert "self" in rec.sink_mass and float(rec.sink_mass["self"].max()) > 1e-3
    (result,) = stream(model, inputs=inputs, reducers=[RolloutReducer()], block_bytes=block_bytes)
    expected = Rollout()(rec, "all", kind="self")
    np.testing.assert_allclose(result.results["rollout"]["self"], expected, atol=1e-6)
    assert (expected.sum(-1) < 1 - 1e-6).all()
