"""attnlrp, cplrp, cplrp_mask and decompx: a case by hand, an independent functional BERT, lxt's own numbers, budgets."""

from __future__ import annotations

import copy
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.models import minilm

import attn_plugins as ap
from attn_plugins.adapters import rule_operands, rule_output
from attn_plugins.errors import InputError, MissingCaptureError, UnsupportedModelError
from attn_plugins.explain.targets import resolve
from attn_plugins.methods import get_method
from attn_plugins.methods.decompx import DecompX, add_bias, decompose
from attn_plugins.methods.lrp import LRP, budget, lrp, masked_baseline, softmax_leak
from attn_plugins.zoo import peaked_, tiny_bert, tiny_model, tiny_tokenizer, tiny_vocab

ROOT = Path(__file__).resolve().parents[2]
TEXT = "the movie was good but the plot was sad"


# ---------------------------------------------------------------------------- by hand
def test_two_token_attention_by_hand():
    """One head, x = [1, 2], W_q = W_k = W_v = 1: AttnLRP's rules by hand (numbers in docs/faithfulness.md)."""
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    q, k = rule_operands("uniform", x[:, None], x[:, None])
    a = torch.softmax(q @ k.T, -1)  # A_1 = softmax(1, 2) = [0.268941, 0.731059]
    a.retain_grad()
    y = rule_output("uniform", a, x[:, None])[:, 0]
    y[0].backward()
    assert float(y[0].detach()) == pytest.approx(1.731059, abs=1e-6)
    # A·V uniform: R(v_1) = A_11 v_1 / 2 = 0.134471, R(v_2) = 0.731059, and the same to A_11, A_12.
    # softmax: R(s_1j) = s_1j (R(A_1j) - A_1j Σ_k R(A_1k)) = -0.098306, 0.196612; Q·Kᵀ: half to q_1, half to k_j.
    # R(x_1) = R(q_1) + R(k_1) + R(v_1) = 0.049153 - 0.049153 + 0.134471; R(x_2) = 0.098306 + 0.731059
    np.testing.assert_allclose((x * x.grad).detach().numpy(), [0.134471, 0.829365], atol=1e-6)
    leak = softmax_leak(a.detach(), a.grad)  # Σ R(A) - Σ R(s) = 0.865529 - 0.098306
    assert leak == pytest.approx(0.767223, abs=1e-6)
    assert float((x * x.grad).sum()) + leak == pytest.approx(float(y[0].detach()), abs=1e-12)

    x.grad = None
    q, k = rule_operands("detached", x[:, None], x[:, None])
    y = rule_output("detached", torch.softmax(q @ k.T, -1), x[:, None])[:, 0]
    y[0].backward()
    # CP-LRP: relevance only through the values, R(x_j) = A_1j v_j, and nothing leaks.
    np.testing.assert_allclose((x * x.grad).detach().numpy(), [0.268941, 1.462117], atol=1e-6)


# ---------------------------------------------------------------------------- an independent implementation
class _Half(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g / 2


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(y / (x + 1e-10))
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_tensors[0], None


def functional_relevance(model, ids, rule, head, baseline=None):
    """BERT written out in float64, each LRP rule one line (the research prototype's minibert, condensed).

    ``head(hidden) -> scalar``; returns {part: [T]} at the embeddings, or the midpoint readout with ``baseline``.
    """
    bert = model.base_model
    emb = bert.embeddings
    heads = model.config.num_attention_heads
    t = ids.shape[1]

    def p(m):
        return m.weight.detach().double(), m.bias.detach().double()

    def ln(x, m):
        w, b = p(m)
        c = x - x.mean(-1, keepdim=True)
        return c / (c.pow(2).mean(-1, keepdim=True) + m.eps).sqrt().detach() * w + b

    def lin(x, m):
        w, b = p(m)
        return x @ w.T + b

    def layers(x):
        for lay in bert.encoder.layer:
            sa = lay.attention.self

            def split(z):
                return z.view(1, t, heads, -1).transpose(1, 2)

            q, k, v = split(lin(x, sa.query)), split(lin(x, sa.key)), split(lin(x, sa.value))
            s = q @ k.transpose(-1, -2)
            s = _Half.apply(s) if rule == "uniform" else s
            a = torch.softmax(s / math.sqrt(q.shape[-1]), -1)
            a = a.detach() if rule == "detached" else a
            c = a @ v
            c = _Half.apply(c) if rule == "uniform" else c
            x1 = ln(
                lin(c.transpose(1, 2).reshape(1, t, -1), lay.attention.output.dense) + x, lay.attention.output.LayerNorm
            )
            h = _Identity.apply(lin(x1, lay.intermediate.dense), torch.nn.functional.gelu)
            x = ln(lin(h, lay.output.dense) + x1, lay.output.LayerNorm)
        return x

    word_table, pos_table, type_table = (
        emb.word_embeddings.weight.detach().double(),
        emb.position_embeddings.weight.detach().double(),
        emb.token_type_embeddings.weight.detach().double(),
    )
    if baseline is not None:
        ex = ln(word_table[ids] + pos_table[:t] + type_table[0], emb.LayerNorm).detach()
        em = ln(word_table[baseline] + pos_table[:t] + type_table[0], emb.LayerNorm).detach()
        z = (em + 0.5 * (ex - em)).requires_grad_()
        head(layers(z)).backward()
        return {"delta": ((ex - em) * z.grad)[0].sum(-1).detach().numpy()}
    word = word_table[ids].clone().requires_grad_()
    pos = pos_table[:t].clone().requires_grad_()
    typ = type_table[0].expand(t, -1).clone().requires_grad_()
    out = ln(word + pos + typ, emb.LayerNorm)
    out.retain_grad()
    head(layers(out)).backward()
    parts = {
        "word": (word * word.grad)[0].sum(-1).detach().numpy(),
        "position": (pos * pos.grad).sum(-1).detach().numpy(),
        "token_type": (typ * typ.grad).sum(-1).detach().numpy(),
        "emb_out": (out * out.grad)[0].sum(-1).detach().numpy(),
    }
    parts["embedding"] = parts["word"] + parts["position"] + parts["token_type"]
    return parts


def _with_biases(model, seed):
    """Random-init BERT has zero biases and LayerNorm gains of one; random ones make every rule (and sink) count."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.2)
            elif "LayerNorm.weight" in name:
                param.copy_(1 + torch.randn(param.shape, generator=g) * 0.2)
    return model


@pytest.fixture(scope="module")
def tiny64():
    """A tiny BERT encoder and classifier with peaked attention and non-zero biases, in float64, and their tokenizer."""
    encoder = _with_biases(peaked_(tiny_bert()), 0).double()
    classifier = _with_biases(peaked_(tiny_bert(num_labels=3, seed=4)), 1).double()
    return encoder, classifier, tiny_tokenizer("bert")


def _pooled_projection(model):
    """A linear read-out of the mean-pooled last hidden states (the sum would be zero after a LayerNorm)."""
    r = torch.linspace(-1, 1, model.config.hidden_size, dtype=torch.float64)
    return lambda out: out.last_hidden_state.mean(1)[0] @ r


def _similarity_head(ref):
    def head(hidden):
        e = hidden.mean(1)[0]
        return e @ ref / (e.norm().detach() * ref.norm())

    return head


@pytest.mark.parametrize("rule", ["uniform", "detached"])
def test_lrp_equals_an_independent_functional_bert(tiny64, rule):
    encoder, classifier, tok = tiny64
    enc = tok(TEXT, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    ref = torch.linspace(-1, 1, encoder.config.hidden_size, dtype=torch.float64)
    head = _similarity_head(ref)
    ours = lrp(encoder, inputs, lambda out: head(out.last_hidden_state), rule)
    theirs = functional_relevance(encoder, enc["input_ids"], rule, head)
    for part in ("word", "position", "token_type", "emb_out", "embedding"):
        np.testing.assert_allclose(ours.parts[part].numpy(), theirs[part], atol=1e-10, err_msg=part)
    assert np.ptp(theirs["word"]) > 1e-3  # not a degenerate case

    # A classifier: the pooler's tanh takes the identity rule, the logit is explained as it is.
    pool, cls = classifier.bert.pooler.dense, classifier.classifier

    def logit(hidden):
        z = hidden[:, 0] @ pool.weight.detach().double().T + pool.bias.detach().double()
        pooled = _Identity.apply(z, torch.tanh)
        return (pooled @ cls.weight.detach().double().T + cls.bias.detach().double())[0, 2]

    ours = lrp(classifier, inputs, 2, rule)
    theirs = functional_relevance(classifier, enc["input_ids"], rule, logit)
    np.testing.assert_allclose(ours.parts["embedding"].numpy(), theirs["embedding"], atol=1e-10)

    base = masked_baseline(enc["input_ids"], [True] + [False] * (enc["input_ids"].shape[1] - 2) + [True], tok)
    ours = lrp(encoder, inputs, lambda out: head(out.last_hidden_state), rule, baseline_ids=base)
    theirs = functional_relevance(encoder, enc["input_ids"], rule, head, baseline=base)
    np.testing.assert_allclose(ours.parts["delta"].numpy(), theirs["delta"], atol=1e-10)


@pytest.mark.parametrize("rule", ["uniform", "detached"])
def test_the_relevance_budget_closes(tiny64, rule):
    """f = Σ tokens (word + position + type) + Σ b·g(b) over every bias (LayerNorm β too) + Σ softmax leaks."""
    encoder, classifier, tok = tiny64
    enc = tok(TEXT, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    for model, target in ((encoder, _pooled_projection(encoder)), (classifier, 1)):
        b = budget(model, inputs, target, rule)
        assert abs(b["residual"]) < 1e-8  # what is left is the identity rule's ε (1e-10 per activation)
        assert abs(b["biases"]) > 1e-4  # the biases do keep relevance: tokens alone do not add up to f
        if rule == "detached":
            assert b["softmax_leak"] == 0.0
        else:
            assert abs(b["softmax_leak"]) > 1e-6
        assert set(b["tokens"]) == {"word", "position", "token_type"}
    # The other encoders of the family the rules cover.
    for model_type in ("roberta", "electra"):
        model = _with_biases(tiny_model(model_type, vocab_size=len(tiny_vocab("bert"))), 2).double()
        b = budget(model, inputs, _pooled_projection(model), rule)
        assert abs(b["residual"]) < 1e-8 and abs(b["f"]) > 1e-3


def test_minilm_conserves_in_float32_and_equals_lxt_in_float64():
    model, tok = minilm()
    spec = resolve(model, tok, "a good film with a great plot", reference="this movie is wonderful")
    enc = tok("a good film with a great plot", return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    for rule in ("uniform", "detached"):
        b = budget(model, inputs, spec.gradient_targets[0], rule)  # float32, the packaged model as it is
        assert abs(b["residual"]) < 1e-4
    # lxt 2.1's own AttnLRP (research h13) on the same weights, float64: relevance at the word embeddings.
    import json

    from attn_plugins.bench.faithful import load_texts, reference_of

    data = load_texts()
    m64 = copy.deepcopy(model).double()
    with np.load(ROOT / "benchmarks" / "results" / "lxt_attnlrp_minilm.npz") as lxt:
        for item in [t for t in data["texts"] if t["id"] in (0, 13, 47, 59)]:
            spec = resolve(m64, tok, item["text"], reference=reference_of(data, item, "round_robin"))
            rec = get_method("attnlrp").capture(m64, tok, item["text"], gradient_target=spec.gradient_targets[0])
            ours = get_method("attnlrp")(rec, part="word")
            np.testing.assert_allclose(ours, lxt[f"rel_{item['id']}"], rtol=0, atol=1e-12)
            assert rec.meta["attnlrp"]["explained_value"] == pytest.approx(float(lxt[f"f_{item['id']}"]), abs=1e-12)
    assert json  # (imported for the reader: the recorded figure over all 60 texts is in faithful.json)


# ---------------------------------------------------------------------------- the method calls
def test_methods_follow_the_shared_call(tiny64):
    encoder, _, tok = tiny64
    model = tiny_bert(num_labels=2)
    rec = get_method("attnlrp").capture(model, tok, TEXT, gradient_target=1)
    scores = ap.attribute(rec, "attnlrp")
    assert scores.shape == (len(rec.tokens),)
    # position selects nothing: the relevance is of the captured target, the same for every row
    np.testing.assert_allclose(ap.attribute(rec, "attnlrp", position="mean"), scores)
    assert ap.attribute(rec, "attnlrp", position="all").shape == (len(rec.tokens), len(rec.tokens))
    np.testing.assert_allclose(
        ap.attribute(rec, "attnlrp", part="word")
        + ap.attribute(rec, "attnlrp", part="position")
        + ap.attribute(rec, "attnlrp", part="token_type"),
        scores,
        atol=1e-6,
    )
    assert rec.attentions["self"].shape == (2, 4, len(rec.tokens), len(rec.tokens))
    rec.validate()
    plain = ap.capture(model, tok, TEXT)
    torch.testing.assert_close(rec.attentions["self"], plain.attentions["self"], atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="leave layers=, heads= and head_reduce= unset"):
        ap.attribute(rec, "attnlrp", layers=0)
    with pytest.raises(InputError, match="part must be one of"):
        ap.attribute(rec, "attnlrp", part="bias")
    with pytest.raises(InputError, match="has no option 'rows'"):
        ap.attribute(rec, "attnlrp", rows=1)
    with pytest.raises(MissingCaptureError, match="get_method\\('cplrp'\\).capture"):
        ap.attribute(rec, "cplrp")
    masked = get_method("cplrp_mask").capture(model, tok, TEXT, gradient_target=1)
    s = ap.attribute(masked, "cplrp_mask")
    assert s[0] == 0.0 and s[-1] == 0.0  # special tokens are never masked: no change to explain
    assert "midpoint" in masked.meta["cplrp_mask"]["attention_at"]
    with pytest.raises(InputError, match="no part="):
        ap.attribute(masked, "cplrp_mask", part="word")


def test_unsupported_models_and_inputs_name_what_is_missing(tok):
    llama = tiny_model("llama")  # LRP has rules for it (tests/methods/test_lrp_zoo.py); DecompX not, below
    from transformers import RobertaForSequenceClassification

    roberta = RobertaForSequenceClassification(tiny_model("roberta", vocab_size=len(tiny_vocab("bert"))).config).eval()
    # Its head calls torch.tanh inside its forward, where no rule can be hooked in.
    with pytest.raises(UnsupportedModelError, match=r"'classifier' \(RobertaClassificationHead\)"):
        get_method("attnlrp").capture(roberta, tok, "the movie", gradient_target=0)
    bert = tiny_bert(num_labels=2)
    with pytest.raises(UnsupportedModelError, match="'bert.encoder.layer.0.attention.self'.*'eager' adapter cannot"):
        get_method("attnlrp").capture(bert, tok, "the movie", gradient_target=0, adapter="eager")
    with pytest.raises(InputError, match="one text at a time"):
        get_method("attnlrp").capture(bert, tok, ["a", "b"], gradient_target=0)
    with pytest.raises(InputError, match="no option 'qk'"):
        get_method("attnlrp").capture(bert, tok, "the movie", gradient_target=0, qk=True)
    with pytest.raises(InputError, match="rule must be one of"):
        LRP("x", rule="gradient")
    bert.train()
    try:
        with pytest.raises(InputError, match="eval mode"):
            get_method("attnlrp").capture(bert, tok, "the movie", gradient_target=0)
    finally:
        bert.eval()
    with pytest.raises(UnsupportedModelError, match="DecompX decomposes post-LN BERT-family"):
        decompose(
            llama, {"input_ids": torch.ones(1, 3, dtype=torch.long)}, 0, ap.capture.__globals__["select_adapter"](llama)
        )


def test_module_rules_apply_only_to_the_thread_that_asked():
    """While one thread runs with the LayerNorm and identity rules, another gets the model's plain gradient.

    (The attention rule lives in the capture function, whose switch of the model's attention
    implementation is the capture engine's: two captures of one model in two threads are not safe there.)
    """
    from attn_plugins.methods.lrp import module_rules

    model = tiny_bert(num_labels=2, seed=5)
    enc = tiny_tokenizer("bert")(TEXT, return_tensors="pt")

    def grad():
        emb = model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_()
        model(inputs_embeds=emb).logits[0, 1].backward()
        return emb.grad.clone()

    expected = grad()
    inside, ready, done = [], threading.Event(), threading.Event()

    def with_rules():
        with module_rules(model):
            inside.append(grad())
            ready.set()
            done.wait(30)

    thread = threading.Thread(target=with_rules)
    thread.start()
    ready.wait(30)
    try:
        torch.testing.assert_close(grad(), expected, atol=1e-6, rtol=0)  # hooks installed, but not for this thread
    finally:
        done.set()
        thread.join()
    assert not torch.allclose(inside[0], expected, atol=1e-4)  # the rules do change the backward where asked
    torch.testing.assert_close(grad(), expected, atol=1e-6, rtol=0)  # and nothing is left behind


# ---------------------------------------------------------------------------- DecompX
def test_decompx_with_biases_apart_is_cplrp_at_the_embedding_output(tiny64):
    """Two independent computations of the same quantity: a decomposition carried forward, a modified backward."""
    encoder, classifier, tok = tiny64
    enc = tok(TEXT, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    from attn_plugins.capture.forward import select_adapter

    for model, target in ((encoder, _pooled_projection(encoder)), (classifier, 2)):
        adapter = select_adapter(model)
        slot = decompose(model, inputs, target, adapter, bias="slot")
        cp = lrp(model, inputs, target, "detached")
        np.testing.assert_allclose(slot["scores"], cp.parts["emb_out"].numpy(), atol=1e-8)
        assert slot["reconstruction_error"] < 1e-10  # Σ over sources gives the actual last hidden states
        assert slot["scores"].sum() + slot["bias"] == pytest.approx(slot["value"], abs=1e-10)
        absdot = decompose(model, inputs, target, adapter, bias="absdot")
        assert absdot["scores"].sum() + absdot["bias"] == pytest.approx(absdot["value"], abs=1e-10)
        assert not np.allclose(absdot["scores"], slot["scores"])


def test_absdot_splits_a_bias_by_hand():
    # token 0 has two sources [1, 0] and [0, 2]; bias [1, 1]: |x·b| = 1 and 2, so 1/3 and 2/3 of b.
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(add_bias(x, b, "absdot")[0].numpy(), [[4 / 3, 1 / 3], [2 / 3, 8 / 3], [0, 0]])
    np.testing.assert_allclose(add_bias(x, b, "slot")[0].numpy(), [[1, 0], [0, 2], [1, 1]])


def test_decompx_method_and_its_explained_value():
    model, tok = tiny_bert(num_labels=3, seed=2), tiny_tokenizer("bert")
    rec = get_method("decompx").capture(model, tok, TEXT, gradient_target=0)
    scores = ap.attribute(rec, "decompx")
    info = rec.meta["decompx"]
    with torch.no_grad():
        logit = float(model(**tok(TEXT, return_tensors="pt")).logits[0, 0])
    assert info["explained_value"] == pytest.approx(logit, abs=1e-5)
    assert scores.sum() + info["bias_share"] == pytest.approx(logit, abs=1e-4)
    assert info["forward_equivalents"] == 1 + len(rec.tokens) + 1
    with pytest.raises(InputError, match="bias must be one of"):
        DecompX(bias="none")
