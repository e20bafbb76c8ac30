"""Each attention method against a small case computed by hand or by an independent implementation here."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins.errors import InputError, MissingCaptureError, RecordValidationError
from attn_plugins.methods import get_method
from attn_plugins.methods.base import Method
from attn_plugins.record import AttentionRecord


def rec(att, tokens=None, **kw) -> AttentionRecord:
    """A validated self-attention record from nested lists [L, H, Q, K]."""
    a = torch.tensor(att, dtype=torch.float32)
    toks = tokens or [f"t{i}" for i in range(a.shape[-1])]
    return AttentionRecord(tokens=toks, attentions={"self": a}, **kw).validate()


def random_attention(shape, seed, causal=False) -> torch.Tensor:
    """Row-stochastic random attention [L, H, Q, K] (optionally causal)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g) * 2
    if causal:
        q, k = shape[-2:]
        logits = logits.masked_fill(torch.triu(torch.ones(q, k, dtype=torch.bool), 1), float("-inf"))
    return logits.softmax(-1)


# ---------------------------------------------------------------------------- registry and positions
def test_every_method_is_registered_through_the_entry_point():
    names = {p.name: p.distribution for p in ap.plugins() if p.kind == "method"}
    for name in ("raw", "rollout", "flow", "grad_attention", "gae", "norm", "alti"):
        assert names[name] == "attn-plugins"
        assert isinstance(get_method(name), Method)


def test_positions_first_last_mean_index_and_errors():
    r = rec([[[[0.5, 0.5, 0.0], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]]])
    np.testing.assert_allclose(ap.attribute(r, "raw", position="first"), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(ap.attribute(r, "raw", position="last"), [0.3, 0.3, 0.4])
    np.testing.assert_allclose(ap.attribute(r, "raw", position=1), [0.1, 0.2, 0.7])
    np.testing.assert_allclose(ap.attribute(r, "raw", position=-2), [0.1, 0.2, 0.7])
    np.testing.assert_allclose(ap.attribute(r, "raw", position="mean"), [0.3, 1 / 3, 1.1 / 3], atol=1e-6)
    np.testing.assert_allclose(ap.attribute(r, "raw", position=[0, 2]), [[0.5, 0.5, 0.0], [0.3, 0.3, 0.4]])
    with pytest.raises(InputError, match="out of range"):
        ap.attribute(r, "raw", position=3)
    with pytest.raises(InputError, match="position must be"):
        ap.attribute(r, "raw", position="middle")
    with pytest.raises(InputError, match="prompt_length"):
        ap.attribute(r, "raw", position="generated")
    with pytest.raises(InputError, match="no 'cross' attention"):
        ap.attribute(r, "raw", kind="cross")
    with pytest.raises(InputError, match="registered name"):
        ap.attribute(r, 3.5)
    with pytest.raises(InputError, match="no option 'layer'; its options are layers, heads, head_reduce"):
        ap.attribute(r, "raw", layer=0)


def test_generated_rows_of_a_causal_record():
    att = random_attention((1, 1, 5, 5), seed=1, causal=True)
    r = AttentionRecord(tokens=list("abcde"), attentions={"self": att}, meta={"causal": True, "prompt_length": 3})
    out = ap.attribute(r.validate(), "raw", position="generated")
    # Tokens 3 and 4 were generated; rows 2 and 3 predicted them.
    np.testing.assert_allclose(out, att[0, 0, 2:4].numpy(), atol=1e-7)


def test_generated_rows_of_capture_generate_records():
    from helpers.models import bart_seq2seq, gpt2_lm

    model, tok = gpt2_lm()
    r = ap.capture_generate(model, tok, "the movie was", max_new_tokens=3)
    prompt = r.meta["generation"]["prompt_tokens"]
    out = ap.attribute(r, "rollout", position="generated")
    assert out.shape == (3, len(r.tokens))
    np.testing.assert_allclose(out, get_method("rollout")(r, "all")[prompt - 1 : prompt + 2], atol=1e-12)
    model, tok = bart_seq2seq()
    r = ap.capture_generate(model, tok, "a bad film", max_new_tokens=3)
    # decoder rows are the start token and each generated token; all but the last predicted a token
    out = ap.attribute(r, "raw", position="generated")
    assert out.shape == (len(r.target_tokens) - 1, len(r.tokens))
    np.testing.assert_allclose(out, r.attentions["cross"].double().mean(1).mean(0)[:-1].numpy(), atol=1e-7)


# ---------------------------------------------------------------------------- raw
def test_raw_mean_and_max_over_heads_and_layer_choice():
    layer0 = [[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.25, 0.75]]]
    layer1 = [[[0.2, 0.8], [0.6, 0.4]], [[0.4, 0.6], [1.0, 0.0]]]
    r = rec([layer0, layer1])
    # default (every method's): all layers, mean over heads, then the mean over layers
    np.testing.assert_allclose(get_method("raw")(r, "all"), [[0.4, 0.6], [0.5875, 0.4125]])
    np.testing.assert_allclose(get_method("raw")(r, "all", layers=-1), [[0.3, 0.7], [0.8, 0.2]])
    np.testing.assert_allclose(get_method("raw")(r, "all", layers=0, head_reduce="max"), [[1.0, 1.0], [0.5, 0.75]])
    np.testing.assert_allclose(get_method("raw")(r, "all", layers=[0, 1], heads=[1]), [[0.2, 0.8], [0.625, 0.375]])
    with pytest.raises(InputError, match="head 5 out of range"):
        get_method("raw")(r, "all", heads=5)
    with pytest.raises(InputError, match="head_reduce must be one of"):
        get_method("raw")(r, "all", head_reduce="median")


# ---------------------------------------------------------------------------- rollout
def test_rollout_by_hand():
    # Â1 = 0.5·A1 + 0.5·I = [[.6,.4],[.3,.7]];  Â2 = [[.5,.5],[.5,.5]];  R = Â2·Â1 = [[.45,.55],[.45,.55]]
    r = rec([[[[0.2, 0.8], [0.6, 0.4]]], [[[0.0, 1.0], [1.0, 0.0]]]])
    np.testing.assert_allclose(get_method("rollout")(r, "all"), [[0.45, 0.55], [0.45, 0.55]], atol=1e-7)
    np.testing.assert_allclose(ap.attribute(r, "rollout", position=0), [0.45, 0.55], atol=1e-7)
    # one layer: just the residual-mixed first layer
    np.testing.assert_allclose(get_method("rollout")(r, "all", layers=[0]), [[0.6, 0.4], [0.3, 0.7]], atol=1e-7)


def test_rollout_matches_abnar_formula_on_random_attention():
    att = random_attention((3, 2, 5, 5), seed=2)
    r = AttentionRecord(tokens=list("abcde"), attentions={"self": att})
    # Abnar & Zuidema's code: mean heads, add I, divide by row sums, joint[i] = aug[i] · joint[i-1]
    aug = att.double().mean(1).numpy() + np.eye(5)[None]
    aug = aug / aug.sum(-1, keepdims=True)
    joint = aug[0]
    for i in range(1, 3):
        joint = aug[i].dot(joint)
    np.testing.assert_allclose(get_method("rollout")(r, "all"), joint, atol=1e-10)
    np.testing.assert_allclose(get_method("rollout")(r, "all").sum(-1), 1.0, atol=1e-10)


def test_rollout_rejects_non_square_and_bad_residual():
    # Rows for only a suffix of the tokens: the record itself is inconsistent, and the method says which field.
    att = torch.full((1, 1, 2, 4), 0.25)
    r = AttentionRecord(tokens=list("abcd"), attentions={"self": att}, meta={"causal": False})
    with pytest.raises(RecordValidationError, match=r"attentions\['self'\].*does not match 4 query"):
        get_method("rollout")(r, "all")
    with pytest.raises(InputError, match="residual"):
        get_method("rollout")(rec([[[[1.0]]]]), "all", residual=2.0)


# ---------------------------------------------------------------------------- flow
def test_flow_by_hand_differs_from_rollout():
    # Â1 = [[.6,.4],[.3,.7]], Â2 = [[.9,.1],[.2,.8]] (A2 = [[.8,.2],[.4,.6]]).
    # From output token 0: to input 0 the paths carry min(.9,.6) + min(.1,.3) = .7, to input 1
    # min(.9,.4) + min(.1,.7) = .5; normalized: [7/12, 5/12]. Rollout would give [.57, .43].
    r = rec([[[[0.2, 0.8], [0.6, 0.4]]], [[[0.8, 0.2], [0.4, 0.6]]]])
    np.testing.assert_allclose(ap.attribute(r, "flow", position=0), [7 / 12, 5 / 12], atol=1e-6)
    np.testing.assert_allclose(ap.attribute(r, "rollout", position=0), [0.57, 0.43], atol=1e-7)


def test_flow_matches_networkx_on_random_attention():
    att = random_attention((3, 2, 4, 4), seed=3)
    r = AttentionRecord(tokens=list("abcd"), attentions={"self": att})
    a = att.double().mean(1).numpy() + np.eye(4)[None]
    a = a / a.sum(-1, keepdims=True)
    g = nx.DiGraph()
    for layer in range(3):
        for i in range(4):
            for j in range(4):
                g.add_edge((layer + 1, i), (layer, j), capacity=a[layer, i, j])
    expected = np.array([[nx.maximum_flow_value(g, (3, i), (0, j)) for j in range(4)] for i in range(4)])
    expected /= expected.sum(-1, keepdims=True)
    m = get_method("flow")(r, "all")
    np.testing.assert_allclose(m, expected, atol=1e-5)
    np.testing.assert_allclose(ap.attribute(r, "flow", position="last"), expected[-1], atol=1e-5)
    np.testing.assert_allclose(ap.attribute(r, "flow", position="mean"), expected.mean(0), atol=1e-5)
    with pytest.raises(InputError, match="out of range"):
        ap.attribute(r, "flow", position=9)
    with pytest.raises(InputError, match="no option 'residual'"):
        ap.attribute(r, "flow", residual=0.3)


# ---------------------------------------------------------------------------- gradients
def grad_record(att, grad, **kw):
    a, g = torch.tensor(att), torch.tensor(grad)
    return AttentionRecord(
        tokens=[f"t{i}" for i in range(a.shape[-1])], attentions={"self": a}, gradients={"self": g}, **kw
    ).validate()


def test_grad_attention_by_hand_and_missing_gradients():
    att = [[[[0.5, 0.5], [0.2, 0.8]], [[1.0, 0.0], [0.4, 0.6]]]]
    grad = [[[[2.0, -1.0], [1.0, 1.0]], [[-3.0, 5.0], [0.5, -2.0]]]]
    r = grad_record(att, grad)
    # head 0: [[1, -.5], [.2, .8]]; head 1: [[-3, 0], [.2, -1.2]]; mean: [[-1, -.25], [.2, -.2]]
    np.testing.assert_allclose(get_method("grad_attention")(r, "all"), [[-1.0, -0.25], [0.2, -0.2]], atol=1e-6)
    sums = get_method("grad_attention")(r, "all", head_reduce="sum")
    np.testing.assert_allclose(sums, [[-2.0, -0.5], [0.4, -0.4]], atol=1e-6)
    # positive parts: head 0 [[1, 0], [.2, .8]], head 1 [[0, 0], [.2, 0]]
    np.testing.assert_allclose(
        get_method("grad_attention")(r, "all", positive=True, head_reduce="sum"), [[1.0, 0.0], [0.4, 0.8]], atol=1e-6
    )
    bare = rec(att)
    for name in ("grad_attention", "gae"):
        with pytest.raises(MissingCaptureError, match="gradients=True"):
            ap.attribute(bare, name)


def test_gae_by_hand_two_layers():
    # layer 0 Ā = mean_h (A⊙G)⁺: head 0 [[1,0],[.2,.8]], head 1 [[0,0],[.2,0]] -> [[.5,0],[.2,.4]]
    # layer 1 (one head repeated) A⊙G = [[0, .6],[.3, 0]] clipped from [[-.2,.6],[.3,-.1]]
    l0a = [[[0.5, 0.5], [0.2, 0.8]], [[1.0, 0.0], [0.4, 0.6]]]
    l0g = [[[2.0, -1.0], [1.0, 1.0]], [[-3.0, 5.0], [0.5, -2.0]]]
    l1a = [[[0.2, 0.8], [0.6, 0.4]], [[0.2, 0.8], [0.6, 0.4]]]
    l1g = [[[-1.0, 0.75], [0.5, -0.25]], [[-1.0, 0.75], [0.5, -0.25]]]
    r = grad_record([l0a, l1a], [l0g, l1g])
    a0 = np.array([[0.5, 0.0], [0.2, 0.4]])
    a1 = np.array([[0.0, 0.6], [0.3, 0.0]])
    expected = (np.eye(2) + a1) @ (np.eye(2) + a0)  # R = I; R += Ā0 R; R += Ā1 R
    np.testing.assert_allclose(get_method("gae")(r, "all"), expected, atol=1e-6)
    np.testing.assert_allclose(ap.attribute(r, "gae", position=0), expected[0], atol=1e-6)


def softmax_rows(shape, seed):
    return random_attention(shape, seed)


def encoder_decoder_record(seed=5, s=4, t=3, le=2, ld=2, h=2):
    g = torch.Generator().manual_seed(seed)
    enc = softmax_rows((le, h, s, s), seed)
    dec = random_attention((ld, h, t, t), seed + 1, causal=True)
    cross = softmax_rows((ld, h, t, s), seed + 2)
    grads = {k: torch.randn(v.shape, generator=g) for k, v in (("encoder", enc), ("decoder", dec), ("cross", cross))}
    return AttentionRecord(
        tokens=[f"s{i}" for i in range(s)],
        target_tokens=[f"y{i}" for i in range(t)],
        attentions={"encoder": enc, "decoder": dec, "cross": cross},
        gradients=grads,
    ).validate()


def chefer_encoder_decoder(enc, dec, cross):
    """Chefer et al. 2021 rules for an encoder-decoder, written from the paper's equations (loops, NumPy)."""

    def bar(r):
        hat = r - np.eye(len(r))
        out = np.zeros_like(hat)
        for i in range(len(r)):
            if hat[i].sum() != 0:
                out[i] = hat[i] / hat[i].sum()
        return out + np.eye(len(r))

    s, t = enc.shape[-1], dec.shape[-1]
    r_ee = np.eye(s)
    for a in enc:
        r_ee = r_ee + a @ r_ee
    r_dd, r_de = np.eye(t), np.zeros((t, s))
    for a_dd, a_de in zip(dec, cross):
        r_dd, r_de = r_dd + a_dd @ r_dd, r_de + a_dd @ r_de
        r_de = r_de + bar(r_dd).T @ a_de @ bar(r_ee)
    return r_de


def test_gae_encoder_decoder_matches_the_paper_rules():
    r = encoder_decoder_record()

    def cam(kind):
        return (r.attentions[kind].double() * r.gradients[kind].double()).clamp_min(0).mean(1).numpy()

    expected = chefer_encoder_decoder(cam("encoder"), cam("decoder"), cam("cross"))
    np.testing.assert_allclose(get_method("gae")(r, "all"), expected, atol=1e-10)  # default kind: cross
    out = ap.attribute(r, "gae", position="generated")
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out, expected[:2], atol=1e-10)
    # encoder alone: R = Π (I + Ā) over encoder layers
    enc = cam("encoder")
    np.testing.assert_allclose(
        get_method("gae")(r, "all", kind="encoder"), (np.eye(4) + enc[1]) @ (np.eye(4) + enc[0]), atol=1e-10
    )
    # decoder self-attention of the same record
    dec = cam("decoder")
    np.testing.assert_allclose(
        get_method("gae")(r, "all", kind="decoder"), (np.eye(3) + dec[1]) @ (np.eye(3) + dec[0]), atol=1e-10
    )


def test_gae_encoder_decoder_by_hand_single_target_token():
    # S=2, T=1, one layer each, one head. Encoder Ā = [[.5,0],[.2,.4]] -> R_ee = I + Ā = [[1.5,0],[.2,1.4]],
    # R̄_ee = rownorm(R_ee - I) + I = [[2,0],[1/3,5/3]]. Decoder Ā_dd = [[.5]] -> R_dd = 1.5, R̄_dd = 2.
    # Cross Ā = [[.3, .6]] -> R_de = 2 · [.3,.6] · R̄_ee = 2 · [.6 + .2, 1.0] = [1.6, 2.0]
    enc_a = torch.tensor([[[[0.5, 0.5], [0.2, 0.8]]]])
    enc_g = torch.tensor([[[[1.0, -1.0], [1.0, 0.5]]]])
    r = AttentionRecord(
        tokens=["a", "b"],
        target_tokens=["y"],
        attentions={"encoder": enc_a, "decoder": torch.ones(1, 1, 1, 1), "cross": torch.tensor([[[[0.5, 0.5]]]])},
        gradients={
            "encoder": enc_g,
            "decoder": torch.full((1, 1, 1, 1), 0.5),
            "cross": torch.tensor([[[[0.6, 1.2]]]]),
        },
    ).validate()
    np.testing.assert_allclose(get_method("gae")(r, "all"), [[1.6, 2.0]], atol=1e-6)


def test_grad_attention_on_a_real_classifier_matches_autograd():
    from attn_plugins.zoo import tiny_bert, tiny_tokenizer

    tok, model = tiny_tokenizer("bert"), tiny_bert(num_labels=3)
    r = ap.capture(model, tok, "the movie was good", gradients=True, gradient_target=2)
    # Independent: eager forward with output_attentions, gradient of logit 2 w.r.t. each layer's attention.
    enc = tok("the movie was good", return_tensors="pt")
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        out = model(**enc, output_attentions=True)
        for a in out.attentions:
            a.retain_grad()
        out.logits[0, 2].backward()
        expected = sum((a * a.grad)[0].sum(0) for a in out.attentions).detach().numpy()
    finally:
        model.set_attn_implementation(previous)
        model.zero_grad()
    np.testing.assert_allclose(get_method("grad_attention")(r, "all", head_reduce="sum"), expected, atol=1e-5)


# ---------------------------------------------------------------------------- norm
def test_norm_by_hand_and_missing_value_norms():
    att = [[[[0.5, 0.5], [0.2, 0.8]], [[1.0, 0.0], [0.4, 0.6]]]]
    norms = torch.tensor([[[2.0, 1.0], [0.5, 4.0]]])  # [L, H, K]: ‖f^h(x_j)‖
    r = AttentionRecord(tokens=["a", "b"], attentions={"self": torch.tensor(att)}, value_norms={"self": norms})
    r.validate()
    # Σ_h α^h_ij ‖f^h(x_j)‖: row 0 = [.5·2 + 1·.5, .5·1 + 0·4] = [1.5, .5]; row 1 = [.4 + .2, .8 + 2.4]
    np.testing.assert_allclose(get_method("norm")(r, "all", head_reduce="sum"), [[1.5, 0.5], [0.6, 3.2]], atol=1e-6)
    # the default combines heads by their mean, as every method does
    np.testing.assert_allclose(ap.attribute(r, "norm", position="last"), [0.3, 1.6], atol=1e-6)
    with pytest.raises(MissingCaptureError, match="value_norms=True"):
        ap.attribute(rec(att), "norm")


def test_norm_averages_layers_on_a_hand_computed_two_layer_case():
    """Summing the layers instead of averaging them (or reading one layer only) changes every number here."""
    alpha = torch.tensor(
        [
            [[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], [[0.1, 0.1, 0.8], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4]]],
            [
                [[0.6, 0.2, 0.2], [0.0, 0.5, 0.5], [0.25, 0.25, 0.5]],
                [[1.0, 0.0, 0.0], [0.2, 0.2, 0.6], [0.0, 0.0, 1.0]],
            ],
        ]
    )  # [L=2, H=2, Q=3, K=3]
    norms = torch.tensor([[[1.0, 2.0, 3.0], [2.0, 1.0, 0.5]], [[4.0, 1.0, 1.0], [0.5, 2.0, 3.0]]])  # [L, H, K]
    r = AttentionRecord(tokens=["a", "b", "c"], attentions={"self": alpha}, value_norms={"self": norms})
    r.validate()
    # By hand, S_l[q, k] = Σ_h α[l, h, q, k]·‖f‖[l, h, k] (head_reduce="sum"); layer 0, row 0:
    # [0.5·1 + 0.1·2, 0.5·2 + 0.1·1, 0·3 + 0.8·0.5] = [0.7, 1.1, 0.4]; layer 1, row 0:
    # [0.6·4 + 1·0.5, 0.2·1 + 0, 0.2·1 + 0] = [2.9, 0.2, 0.2]. Layers are averaged: [1.8, 0.65, 0.3].
    np.testing.assert_allclose(get_method("norm")(r, 0, layers=[0], head_reduce="sum"), [0.7, 1.1, 0.4], atol=1e-7)
    np.testing.assert_allclose(get_method("norm")(r, 0, layers=[1], head_reduce="sum"), [2.9, 0.2, 0.2], atol=1e-7)
    np.testing.assert_allclose(get_method("norm")(r, 0, head_reduce="sum"), [1.8, 0.65, 0.3], atol=1e-7)
    # The default mean over heads halves the head sums: [0.9, 0.325, 0.15].
    np.testing.assert_allclose(ap.attribute(r, "norm", position=0, layers=[0, 1]), [0.9, 0.325, 0.15], atol=1e-7)


def test_norm_matches_kobayashi_definition_on_a_real_bert():
    from attn_plugins.zoo import tiny_bert, tiny_tokenizer

    tok, model = tiny_tokenizer("bert"), tiny_bert()
    text = "a good film"
    r = ap.capture(model, tok, text, value_norms=True, adapter="huggingface")
    # Independent: ‖(x W_V^h + b_V^h) W_O^h‖ from the value layer's output and the output projection.
    layer = model.encoder.layer[-1]
    saved = {}
    handle = layer.attention.self.value.register_forward_hook(lambda m, i, o: saved.setdefault("v", o.detach()))
    with torch.no_grad():
        model(**tok(text, return_tensors="pt"))
    handle.remove()
    v = saved["v"][0].view(-1, 4, 8)  # [T, H, d]
    w = layer.attention.output.dense.weight.detach().view(32, 4, 8)  # [D, H, d]
    fx_norm = torch.einsum("thv,dhv->htd", v, w).norm(dim=-1)  # [H, T]
    expected = torch.einsum("hqk,hk->qk", r.attentions["self"][-1].double(), fx_norm.double()).numpy()
    np.testing.assert_allclose(
        get_method("norm")(r, "all", layers=-1, head_reduce="sum"), expected, rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------------------------- alti
def test_alti_rollout_by_hand_and_missing_extras():
    r = rec([[[[0.5, 0.5], [0.5, 0.5]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    r.extras["alti"] = torch.tensor([[[0.8, 0.2], [0.4, 0.6]], [[1.0, 0.0], [0.5, 0.5]]])
    # C2 · C1 = [[.8, .2], [.6, .4]]
    np.testing.assert_allclose(get_method("alti")(r, "all"), [[0.8, 0.2], [0.6, 0.4]], atol=1e-7)
    np.testing.assert_allclose(get_method("alti")(r, "all", rollout=False), [[1.0, 0.0], [0.5, 0.5]])
    with pytest.raises(MissingCaptureError, match="capture_alti"):
        ap.attribute(rec([[[[1.0]]]]), "alti")
    r.extras["alti"] = torch.ones(2, 3, 3)
    with pytest.raises(InputError, match="must be"):
        ap.attribute(r, "alti")


def independent_alti(model, tok, text):
    """ALTI from the paper with explicit loops over token pairs, from hidden states and module weights."""
    enc = tok(text, return_tensors="pt")
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(**enc, output_attentions=True, output_hidden_states=True)
    finally:
        model.set_attn_implementation(previous)
    n = enc["input_ids"].shape[1]
    mats = []
    with torch.no_grad():  # weights need no gradients here
        for li, layer in enumerate(model.encoder.layer):
            x = out.hidden_states[li][0].double()
            a = out.attentions[li][0].double()
            sa = layer.attention.self
            wv, bv = sa.value.weight.double(), sa.value.bias.double()
            wo, bo = layer.attention.output.dense.weight.double(), layer.attention.output.dense.bias.double()
            ln = layer.attention.output.LayerNorm
            gamma, beta = ln.weight.double(), ln.bias.double()
            heads, d = 4, 8
            # pre-LN input: Σ_j Σ_h α f(x_j) + b_O + x_i, computed in full to get σ_i
            vals = x @ wv.T + bv
            ctx = torch.stack([a[h] @ vals[:, h * d : (h + 1) * d] for h in range(heads)], 1).reshape(n, -1)
            pre = ctx @ wo.T + bo + x
            sigma = torch.sqrt(pre.var(-1, unbiased=False) + ln.eps)
            c = torch.zeros(n, n, dtype=torch.float64)
            for i in range(n):
                terms = []
                for j in range(n):
                    z = sum(
                        a[h, i, j] * (vals[j, h * d : (h + 1) * d] @ wo[:, h * d : (h + 1) * d].T) for h in range(heads)
                    )
                    if i == j:
                        z = z + x[j]
                    terms.append(gamma * (z - z.mean()) / sigma[i])
                y = sum(terms) + gamma * (bo - bo.mean()) / sigma[i] + beta
                for j in range(n):
                    c[i, j] = max(0.0, float(y.abs().sum() - (y - terms[j]).abs().sum()))
                c[i] /= c[i].sum()
            mats.append(c)
    return torch.stack(mats).numpy()


def test_alti_capture_matches_an_independent_implementation():
    from attn_plugins.methods.alti import capture_alti
    from attn_plugins.zoo import tiny_bert, tiny_tokenizer

    tok, model = tiny_tokenizer("bert"), tiny_bert(num_labels=2)
    r = capture_alti(model, tok, "a very good movie")
    assert r.meta["alti_reconstruction_error"] < 1e-4  # Σ_j T̃_i(x_j) + bias is the layer norm's output
    expected = independent_alti(model.bert, tok, "a very good movie")
    np.testing.assert_allclose(r.extras["alti"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(get_method("alti")(r, "all"), expected[1] @ expected[0], atol=1e-5)
    assert ap.attribute(r, "alti", position="first").shape == (len(r.tokens),)


def test_alti_rejects_models_without_bert_layers():
    from transformers import GPT2Config, GPT2Model

    from attn_plugins.errors import UnsupportedModelError
    from attn_plugins.methods.alti import capture_alti
    from attn_plugins.zoo import tiny_tokenizer

    model = GPT2Model(GPT2Config(vocab_size=200, n_embd=16, n_layer=1, n_head=2)).eval()
    with pytest.raises(UnsupportedModelError, match="BERT-family"):
        capture_alti(model, tiny_tokenizer("gpt"), "hello")


# ---------------------------------------------------------------------------- kinds
def test_cross_rollout_and_raw_on_encoder_decoder_records():
    r = encoder_decoder_record(seed=9)
    mean = {k: v.double().mean(1).numpy() for k, v in r.attentions.items()}
    expected = chefer_encoder_decoder(mean["encoder"], mean["decoder"], mean["cross"])
    np.testing.assert_allclose(get_method("rollout")(r, "all"), expected, atol=1e-10)
    np.testing.assert_allclose(ap.attribute(r, "raw", position="last"), mean["cross"].mean(0)[-1], atol=1e-7)
    np.testing.assert_allclose(ap.attribute(r, "raw", position="last", layers=-1), mean["cross"][-1][-1], atol=1e-7)
    with pytest.raises(InputError, match="not 'cross'"):
        ap.attribute(r, "flow", kind="cross")


# ---------------------------------------------------------------------------- the contract
def contract_record() -> AttentionRecord:
    """A 3-layer record with everything the built-in methods read (gradients, value norms, ALTI extras)."""
    g = torch.Generator().manual_seed(5)
    att = torch.softmax(torch.randn(3, 2, 4, 4, generator=g) * 2, -1)
    return AttentionRecord(
        tokens=["[CLS]", "a", "b", "[SEP]"],
        attentions={"self": att},
        gradients={"self": torch.randn(3, 2, 4, 4, generator=g)},
        value_norms={"self": torch.rand(3, 2, 4, generator=g) + 0.5},
        extras={"alti": torch.softmax(torch.randn(3, 4, 4, generator=g), -1)},
    ).validate()


@pytest.mark.parametrize("name", ["raw", "rollout", "flow", "grad_attention", "gae", "norm", "alti"])
def test_every_method_takes_the_same_call(name):
    r = contract_record()
    method = get_method(name)
    full = ap.attribute(r, name, position="first", layers=None, heads=None, head_reduce="mean", kind=None)
    assert full.shape == (4,) and np.isfinite(full).all()
    np.testing.assert_allclose(ap.attribute(r, name, position="all")[0], full, atol=1e-12)
    np.testing.assert_allclose(ap.attribute(r, name, position="mean"), ap.attribute(r, name, "all").mean(0), atol=1e-12)
    with pytest.raises(InputError, match=f"method {name!r} has no option 'bogus'.*layers, heads, head_reduce, kind"):
        method(r, bogus=1)
    with pytest.raises(InputError, match="layer 3 out of range"):
        method(r, layers=[3])
    # layers are original numbers and products run bottom-up, whatever order a selection stored them in
    reordered = r.select(layers=[2, 0, 1])
    assert reordered.layer_ids() == [2, 0, 1]
    np.testing.assert_allclose(ap.attribute(reordered, name), full, atol=1e-10)
    if name != "alti":  # ALTI combines every head itself
        one_head = ap.attribute(r, name, heads=[1])
        np.testing.assert_allclose(ap.attribute(r.select(heads=[1]), name), one_head, atol=1e-10)
    else:
        with pytest.raises(InputError, match="alti combines every head"):
            method(r, heads=[1])


def test_a_later_layer_selection_changes_what_propagating_methods_see():
    r = contract_record()
    for name in ("rollout", "flow", "gae", "raw"):
        assert not np.allclose(ap.attribute(r, name, layers=[0]), ap.attribute(r, name, layers=[1, 2])), name
    # rollout of one layer is that layer's residual mix
    a = r.attentions["self"][1].double().mean(0)
    mixed = 0.5 * a + 0.5 * torch.eye(4, dtype=torch.float64)
    np.testing.assert_allclose(ap.attribute(r, "rollout", "all", layers=1), mixed.numpy(), atol=1e-12)


def test_rollout_keeps_a_learned_sinks_share_as_missing_mass():
    """With sinks, rows sum to 1 - sink: rollout mixes 0.5·A + 0.5·I and divides by the total with the sink in it,
    so mass the sink took reaches no token (renormalizing the rows would hand it to the tokens)."""
    g = torch.Generator().manual_seed(3)
    full = torch.softmax(torch.randn(2, 2, 4, 5, generator=g), -1)  # last column: the sink
    att, sink = full[..., :4], full[..., 4]
    rec = ap.AttentionRecord(tokens=list("abcd"), attentions={"self": att}, sink_mass={"self": sink})
    rec.validate()
    a = att.double().mean(1)
    s = sink.double().mean(1)
    eye = torch.eye(4, dtype=torch.float64)
    mixed = [(0.5 * a[i] + 0.5 * eye) / (0.5 * (a[i].sum(-1) + s[i]) + 0.5)[:, None] for i in range(2)]
    expected = (mixed[1] @ mixed[0]).numpy()
    got = ap.attribute(rec, "rollout", position="all", layers=None)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert (got.sum(-1) < 1 - 1e-3).all()  # the sink's share is missing, not redistributed
    renormalized = ap.AttentionRecord(tokens=list("abcd"), attentions={"self": att / att.sum(-1, keepdim=True)})
    assert not np.allclose(got, ap.attribute(renormalized, "rollout", position="all", layers=None), atol=1e-3)
