"""Capture at the cost floor: one attention computation per captured layer, selection before the forward."""

from __future__ import annotations

import warnings

import pytest
import torch

import attn_adapters.huggingface as hf
import attn_plugins as ap
from attn_plugins.zoo import peaked_, tiny_bert, tiny_inputs, tiny_model, tiny_tokenizer

TEXT = "the movie was great but the ending was sad"


@pytest.fixture
def model():
    return peaked_(tiny_bert(num_labels=2, layers=3, seed=2))


@pytest.fixture
def tok():
    return tiny_tokenizer("bert")


@pytest.fixture
def counted(monkeypatch):
    """How many layers the kernel computed (each captured call of the fast and listening paths is one kernel call)."""
    calls = []
    real = hf.fast.attend

    def attend(query, *args, **kwargs):
        calls.append(tuple(query.shape))
        return real(query, *args, **kwargs)

    # The fast capture (ap.capture) and the listening one (generation, streaming) each call the kernel.
    monkeypatch.setattr(hf.fast, "attend", attend)
    monkeypatch.setattr(hf.listen, "attend", attend)
    return calls


def forwards(model: torch.nn.Module) -> list:
    seen: list = []
    model.register_forward_pre_hook(lambda *_: seen.append(1))
    return seen


def test_output_from_own_probabilities_and_keep_backend_bit_identical(model, tok):
    enc = tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        plain = model(**enc).logits
    from attn_plugins.capture import encode_inputs

    adapter = hf.HuggingFaceAdapter()
    for _ in range(2):  # learning the layout, then the one-computation path
        out, _ = adapter.run(model, encode_inputs(model, dict(enc)), ap.adapters.CaptureOptions())
        assert torch.allclose(out.logits, plain, atol=1e-5)
        kept, _ = adapter.run(model, encode_inputs(model, dict(enc)), ap.adapters.CaptureOptions(keep_backend=True))
        assert torch.equal(kept.logits, plain)


def test_only_the_selected_layer_is_computed(model, tok, counted):
    # keep_backend: every layer's output is the backend's, so layer 2 sees the same input as when layers 0
    # and 1 are not captured at all (they run the backend): its weights are then bit-identical.
    full = ap.capture(model, tok, TEXT, keep_backend=True)
    counted.clear()
    last = ap.capture(model, tok, TEXT, layers=[-1], heads=[1, 0])
    assert len(counted) == 1  # one of three layers computed; the others ran the backend
    assert last.layer_ids() == [2] and last.head_ids() == [1, 0]
    assert torch.equal(last.attentions["self"][0], full.attentions["self"][2, [1, 0]])
    # The record owns its weights and nothing else (no batch-wide storage, no padding kept).
    att = last.attentions["self"]
    assert att.untyped_storage().nbytes() == att.numel() * att.element_size()
    counted.clear()
    ap.capture(model, tok, TEXT)
    assert len(counted) == 3


def test_padded_batch_float16_records_hold_only_their_tokens(model, tok):
    texts = ["good", TEXT]
    full = ap.capture(model, tok, texts)
    half = ap.capture(model, tok, texts, dtype=torch.float16)
    for a, b in zip(full, half):
        assert b.attentions["self"].dtype == torch.float16
        assert b.attentions["self"].shape == a.attentions["self"].shape
        assert torch.allclose(b.attentions["self"].float(), a.attentions["self"], atol=1e-3)
        b.validate()
    ref = ap.capture(model, tok, "good")
    assert torch.allclose(full[0].attentions["self"], ref.attentions["self"], atol=1e-5)


@pytest.mark.parametrize(
    "bad, match",
    [({"layers": [99]}, "layer 99 out of range.*0..2"), ({"heads": [-100]}, "head -100 out of range.*0..3")],
)
def test_bad_selection_fails_before_the_forward(model, tok, counted, bad, match):
    ap.capture(model, tok, TEXT)  # the layout is learned
    seen = forwards(model)
    counted.clear()
    with pytest.raises(ap.InputError, match=match):
        ap.capture(model, tok, TEXT, **bad)
    assert seen == [] and counted == []


def test_bad_selection_on_a_first_capture_names_the_range(tok):
    model = tiny_bert(num_labels=2, layers=2, seed=5)
    with pytest.raises(ap.InputError, match=r"layer 99 out of range: there are 2 self layers \(0..1"):
        ap.capture(model, tok, TEXT, layers=[99])


def test_unknown_kind_names_the_kinds_the_model_has(model, tok):
    with pytest.raises(ap.InputError, match="kind 'cross': this model has 'self' attention"):
        ap.capture(model, tok, TEXT, kinds=["cross"])
    with pytest.raises(ap.InputError, match="kind 'cross': this model has 'self' attention"):
        ap.capture(model, tok, TEXT, kinds=["cross"], adapter="eager")


def test_kinds_select_before_the_forward(counted):
    model = tiny_model("bart")
    inputs = tiny_inputs(model, batch=1)
    full = ap.capture(model, inputs=inputs)
    counted.clear()
    cross = ap.capture(model, inputs=inputs, kinds=["cross"])
    assert cross.kinds == ["cross"]
    assert len(counted) == len(full.layer_ids("cross")) == 2  # the encoder and decoder self-attention ran the backend
    assert torch.allclose(cross.attentions["cross"], full.attentions["cross"], atol=1e-6)


def test_keep_backend_with_gradients_is_refused_with_the_reason(model, tok):
    with pytest.raises(ap.InputError, match="keep_backend=True cannot go with gradients=True: the gradients"):
        ap.capture(model, tok, TEXT, keep_backend=True, gradients=True)


def test_generation_computes_only_the_selected_layer_and_warns_nothing(counted):
    tok = tiny_tokenizer("gpt")
    model = tiny_model("llama", peaked=2.0, vocab_size=len(tok.get_vocab()))
    full = ap.capture_generate(model, tok, "the movie was", max_new_tokens=3)
    counted.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        last = ap.capture_generate(model, tok, "the movie was", max_new_tokens=3, layers=[-1])
    steps = 3 + 1  # prompt, two fed-back tokens, the closing step
    assert len(counted) == steps
    assert last.layer_ids() == [full.layer_ids()[-1]]
    assert torch.allclose(last.attentions["self"][0], full.attentions["self"][-1], atol=1e-6)
    with pytest.raises(ap.InputError, match="layer 7 out of range"):
        ap.capture_generate(model, tok, "the movie was", max_new_tokens=2, layers=[7])


def _as_arrays(result: dict) -> dict:
    from attn_plugins.capture import TopKResult

    out = {}
    for name, per_kind in result.items():
        for kind, value in per_kind.items():
            if isinstance(value, TopKResult):
                out[(name, kind, "values")], out[(name, kind, "indices")] = value.values, value.indices
            else:
                out[(name, kind)] = value
    return out


@pytest.mark.parametrize("model_type", ["bert", "llama", "gpt_oss", "bart"])
def test_streaming_in_one_row_blocks_equals_whole_layers(model_type):
    from attn_plugins.capture import HeadEntropy, HeadReduce, RolloutReducer, TopK, stream

    model = tiny_model(model_type)
    inputs = tiny_inputs(model, batch=2)

    def reducers() -> list:
        return [RolloutReducer(), HeadReduce("mean"), HeadEntropy(), TopK(3)]

    whole = stream(model, inputs=inputs, reducers=reducers(), block_bytes=None)
    rows = stream(model, inputs=inputs, reducers=reducers(), block_bytes=1)  # one query row per block
    for a, b in zip(whole, rows):
        x, y = _as_arrays(a.results), _as_arrays(b.results)
        assert x.keys() == y.keys()
        for key in x:
            assert abs(x[key] - y[key]).max() <= 1e-6, key


def test_streaming_computes_only_the_layers_a_reducer_reads(model, tok, counted):
    from attn_plugins.capture import HeadReduce, stream

    full = ap.capture(model, tok, TEXT, keep_backend=True)
    counted.clear()
    (result,) = stream(model, tok, TEXT, HeadReduce("mean", layers=[1]))
    assert len(counted) == 1  # layers 0 and 2 ran the backend
    expected = full.attentions["self"][1].double().mean(0).numpy()
    assert abs(result.results["head_mean"]["self"][0] - expected).max() <= 1e-6
    with pytest.raises(ap.InputError, match="layer 7 out of range"):
        stream(model, tok, TEXT, HeadReduce("mean", layers=[7]))


def _encoder(batch_first: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first)
    return torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()


def _by_hand(model: torch.nn.Module, x: torch.Tensor, batch_first: bool) -> list[torch.Tensor]:
    """Each layer's per-head weights, from the modules' own need_weights path."""
    out, h = [], x
    with torch.no_grad():
        for layer in model.layers:
            _, w = layer.self_attn(h, h, h, need_weights=True, average_attn_weights=False)
            out.append(w)
            h = layer(h)
    return out


@pytest.mark.parametrize("batch_first", [True, False])
def test_any_pytorch_model_takes_its_own_forward_arguments(batch_first):
    model = _encoder(batch_first)
    x = torch.randn((2, 5, 16) if batch_first else (5, 2, 16), generator=torch.Generator().manual_seed(1))
    expected = _by_hand(model, x, batch_first)
    for inputs in (x, (x,), {"src": x}):  # a tensor, positional arguments, keyword arguments
        records = ap.capture(model, inputs=inputs)
        assert len(records) == 2
        for b, rec in enumerate(records):
            rec.validate()
            assert rec.tokens == [str(i) for i in range(5)]
            for layer in range(2):
                assert torch.allclose(rec.attentions["self"][layer], expected[layer][b], atol=1e-6)
    one = ap.capture(model, inputs=x[:1] if batch_first else x[:, :1])
    assert isinstance(one, ap.AttentionRecord) and one.num_layers == 2
    with pytest.raises(ap.InputError, match="inputs are empty"):
        ap.capture(model, inputs=())


def test_heatmap_shows_the_sink_as_the_missing_mass():
    model = tiny_model("gpt_oss")
    rec = ap.capture(model, inputs=tiny_inputs(model, batch=1))
    view = ap.views.heatmap(rec, layers=[0], heads=[1])
    assert view.keys[-1] == "[sink]" and view.matrix.shape == (len(rec.tokens), len(rec.tokens) + 1)
    assert abs(view.matrix.sum(-1) - 1).max() < 1e-5  # the tokens' weights plus the sink's share
    assert abs(view.matrix[:, -1] - rec.sink_mass["self"][0, 1].numpy()).max() < 1e-6
    plain = ap.views.heatmap(ap.capture(tiny_bert(), tiny_tokenizer("bert"), TEXT))
    assert "[sink]" not in plain.keys


def test_record_memory_is_reused_only_once_nothing_holds_it(model, tok):
    """The buffer pool hands a record's storage out again only after every tensor on it is gone."""
    import gc

    def ptr(rec: ap.AttentionRecord) -> int:
        return rec.attentions["self"].untyped_storage().data_ptr()

    a = ap.capture(model, tok, TEXT)
    kept = a.attentions["self"].clone()
    b = ap.capture(model, tok, TEXT)
    assert ptr(a) != ptr(b) and torch.equal(a.attentions["self"], kept)  # a live record is never overwritten
    old = ptr(a)
    view = a.attentions["self"][0]  # a view keeps the storage in use
    del a
    gc.collect()
    c = ap.capture(model, tok, TEXT)
    assert ptr(c) != old and torch.equal(view, kept[0])
    del view
    gc.collect()
    d = ap.capture(model, tok, TEXT)
    assert ptr(d) == old  # free again: reused, no fresh pages to fault in
    assert torch.equal(d.attentions["self"], kept) and torch.equal(b.attentions["self"], kept)
    del c
