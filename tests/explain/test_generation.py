"""Generated tokens explained one by one: relevance from one forward, forced decoding, contrasts, chat prompts,
a generation that stops early."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from helpers.models import bart_seq2seq, bert_head, gpt2_lm
from helpers.noise import FACTOR, FLOOR, explain_tolerance

import attn_plugins as ap
from attn_plugins.errors import InputError
from attn_plugins.explain.targets import TokenLogProb, resolve
from attn_plugins.methods import get_method
from attn_plugins.zoo import ZOO, tiny_model, tiny_tokenizer, tiny_vocab, zoo_types

TEXT = "the movie was good"
LRP = ["cplrp", "attnlrp", "cplrp_mask"]
# A small Jinja chat template for the tiny tokenizer (role markers around each message's content).
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} ;{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
MODELS = {"gpt2": gpt2_lm, "bart": bart_seq2seq}


@pytest.fixture(scope="module", params=sorted(MODELS))
def lm(request):
    return MODELS[request.param]()


def single_runs(model, tok, spec, method, targets=None):
    """Each step's relevance from its own forward and backward (the reference the batched steps must equal)."""
    m = get_method(method)
    cols, values = [], []
    for target in targets or spec.gradient_targets:
        rec = m.capture(model, tok, inputs=spec.inputs, gradient_target=target)
        v = m.scores(rec, kind=spec.kind)
        if spec.task == "seq2seq":
            v = np.concatenate([v, m.decoder_scores(rec)])
        cols.append(v)
        values.append(rec.meta[method]["explained_value"])
    return np.stack(cols, -1), np.array(values)


def log_probs(model, spec, tokens, against=None):
    """log p(token) (− log p(contrast)) at each explained row, from a plain forward, and the float32-vs-64 gap."""
    out = []
    for m in (model, copy.deepcopy(model).double()):
        with torch.no_grad():
            logp = torch.log_softmax(m(**spec.inputs).logits[0].double(), -1)
        rows = torch.tensor(spec.positions)
        v = logp[rows, torch.tensor(tokens)]
        if against is not None:
            v = v - logp[rows, torch.tensor(against)]
        out.append(v.numpy())
    return out[0], max(FACTOR * float(np.abs(out[0] - out[1]).max()), FLOOR)


@pytest.mark.parametrize("method", LRP)
def test_each_step_from_one_forward_equals_its_own_single_target_run(lm, method):
    model, tok = lm
    explainer = ap.AttentionExplainer(model, tok, method=method, max_new_tokens=4, special_tokens=True)
    expl = explainer(TEXT)
    assert explainer.forward_passes == 1  # one forward for the four steps (one backward each)
    spec = resolve(model, tok, TEXT, max_new_tokens=4)
    alone, values = single_runs(model, tok, spec, method)
    tol = explain_tolerance(model, tok, [TEXT], method=method, max_new_tokens=4, special_tokens=True)
    np.testing.assert_allclose(expl.values[0], alone, atol=tol)
    # each step explains the log-probability of its token (cplrp_mask: its change from the masked text, read at
    # the midpoint, so the value there is another)
    if method != "cplrp_mask":
        expected, gap = log_probs(model, spec, spec.meta["generated_ids"])
        np.testing.assert_allclose(values, expected, atol=gap)


def test_a_causal_step_gives_nothing_to_the_tokens_after_it():
    model, tok = gpt2_lm()
    expl = ap.explain(model, tok, TEXT, method="cplrp", max_new_tokens=4)
    p = resolve(model, tok, TEXT, max_new_tokens=4).meta["prompt_length"]
    values = expl.values[0]
    # feature p + j is generated token j: step t reads it only when j < t (causal attention: exact zeros)
    for t in range(4):
        assert np.all(values[p + t :, t] == 0.0)
        assert np.all(values[p : p + t, t] != 0.0)


def test_forced_decoding_explains_the_given_continuation(lm):
    model, tok = lm
    seq2seq = model.config.is_encoder_decoder
    spec = resolve(model, tok, TEXT, target="a bad film")
    ids = (
        tok(text_target="a bad film")["input_ids"]
        if seq2seq
        else tok("a bad film", add_special_tokens=False)["input_ids"]
    )
    assert spec.meta["generated_ids"] == ids and spec.meta["forced"] is True
    if seq2seq:  # teacher forcing: the decoder reads its start token and the given tokens but the last
        assert spec.inputs["decoder_input_ids"][0].tolist() == [model.config.decoder_start_token_id, *ids[:-1]]
    else:
        assert spec.inputs["input_ids"][0].tolist()[-(len(ids) - 1) :] == ids[:-1]
    expl = ap.explain(model, tok, TEXT, method="cplrp", target="a bad film", special_tokens=True)
    assert expl.values[0].shape[1] == len(ids)
    alone, values = single_runs(model, tok, spec, "cplrp")
    tol = explain_tolerance(model, tok, [TEXT], method="cplrp", target="a bad film", special_tokens=True)
    np.testing.assert_allclose(expl.values[0], alone, atol=tol)
    np.testing.assert_allclose(values, log_probs(model, spec, ids)[0], atol=log_probs(model, spec, ids)[1])
    # left out by default: the source's special tokens and an encoder-decoder's start token
    kept = ap.explain(model, tok, TEXT, method="cplrp", target="a bad film")
    assert kept.values[0].shape == (4 + len(ids) - 1, len(ids))  # 4 prompt words, the given tokens but the last
    with pytest.raises(InputError, match="not both"):
        resolve(model, tok, TEXT, target="a bad film", max_new_tokens=2)


@pytest.mark.parametrize("method", ["cplrp", "cplrp_mask"])
def test_a_contrast_token_explains_the_difference_of_the_two_relevances(lm, method):
    """R(log p_t − log p_c) = R(log p_t) − R(log p_c): the modified backward is linear in what it starts from."""
    model, tok = lm
    expl = ap.explain(model, tok, TEXT, method=method, max_new_tokens=3, contrast_token="bad", special_tokens=True)
    spec = resolve(model, tok, TEXT, max_new_tokens=3, contrast_token="bad")
    c = tok("bad", add_special_tokens=False)["input_ids"][0]
    assert spec.meta["contrast_ids"] == [c] * 3 and spec.meta["contrast_tokens"] == ["bad"] * 3
    tokens = spec.meta["generated_ids"]
    plain, _ = single_runs(model, tok, spec, method, [TokenLogProb(r, t) for r, t in zip(spec.positions, tokens)])
    other, _ = single_runs(model, tok, spec, method, [TokenLogProb(r, c) for r in spec.positions])
    tol = explain_tolerance(
        model, tok, [TEXT], method=method, max_new_tokens=3, contrast_token="bad", special_tokens=True
    )
    np.testing.assert_allclose(expl.values[0], plain - other, atol=2 * tol)
    if method == "cplrp":
        _, values = single_runs(model, tok, spec, method)
        expected, gap = log_probs(model, spec, tokens, [c] * 3)
        np.testing.assert_allclose(values, expected, atol=gap)
    with torch.no_grad():
        out = model(**spec.inputs)
    # the gradient methods' form of each step's target: the same difference
    np.testing.assert_allclose(
        [float(g(out)) for g in spec.gradient_targets],
        expected if method == "cplrp" else log_probs(model, spec, tokens, [c] * 3)[0],
        atol=log_probs(model, spec, tokens, [c] * 3)[1],
    )
    assert all("(vs bad)" in str(n) for n in expl.output_names[0])
    assert expl.generation[0]["contrast_tokens"] == ["bad"] * 3


def test_a_contrast_continuation_is_aligned_token_by_token(lm):
    model, tok = lm
    seq2seq = model.config.is_encoder_decoder
    other = "a bad film"
    n = len(tok(text_target=other)["input_ids"]) if seq2seq else len(tok(other, add_special_tokens=False)["input_ids"])
    expl = ap.explain(model, tok, TEXT, method="grad_attention", contrast=other)
    info = expl.generation[0]
    assert len(info["generated_ids"]) == n  # as many generated tokens as the contrast has
    spec = resolve(model, tok, TEXT, contrast=other)
    assert [t.contrast for t in spec.gradient_targets] == info["contrast_ids"]
    assert [t.token for t in spec.gradient_targets] == info["generated_ids"]
    short = 2 if seq2seq else 1  # "film" (and an encoder-decoder's closing EOS)
    with pytest.raises(InputError, match=rf"'film' is {short} tokens but the explained continuation is 4"):
        ap.explain(model, tok, TEXT, method="cplrp", max_new_tokens=4, contrast="film")


def test_contrast_bad_inputs():
    model, tok = gpt2_lm()
    with pytest.raises(InputError, match="not both"):
        resolve(model, tok, TEXT, max_new_tokens=2, contrast="a bad", contrast_token="bad")
    with pytest.raises(InputError, match="is 2 tokens, not one"):
        resolve(model, tok, TEXT, max_new_tokens=2, contrast_token="bad film")
    with pytest.raises(InputError, match="out of range"):
        resolve(model, tok, TEXT, max_new_tokens=2, contrast_token=10**6)
    with pytest.raises(InputError, match="reads attention only"):
        ap.explain(model, tok, TEXT, method="rollout", max_new_tokens=2, contrast_token="bad")
    with pytest.raises(InputError, match="generates none"):
        ap.explain(bert_head("seq"), tiny_tokenizer("bert"), TEXT, method="cplrp", contrast="a bad")


def test_next_token_with_a_contrast_token():
    model, tok = gpt2_lm()
    c = tok("bad", add_special_tokens=False)["input_ids"][0]
    spec = resolve(model, tok, TEXT, contrast_token="bad")
    tid = spec.meta["token_id"]
    logp = spec.fn([TEXT])[0]
    with torch.no_grad():
        full = torch.log_softmax(model(**tok(TEXT, return_tensors="pt")).logits[0, -1], -1)
    np.testing.assert_allclose(logp, float(full[tid] - full[c]), atol=1e-5)
    assert "− log p('bad')" in spec.label


def chat_tokenizer():
    tok = tiny_tokenizer("gpt")
    tok.chat_template = TEMPLATE
    return tok


def test_a_chat_prompt_is_explained_over_the_messages_words():
    model, _ = gpt2_lm()
    tok = chat_tokenizer()
    messages = [{"role": "user", "content": "the movie was good"}]
    expl = ap.explain(model, tok, messages, method="cplrp", max_new_tokens=2)
    spec = resolve(model, tok, messages, max_new_tokens=2)
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert spec.text == rendered and spec.meta["chat_template_tokens"] > 0
    p = spec.meta["prompt_length"]
    assert spec.inputs["input_ids"][0, :p].tolist() == tok(rendered, add_special_tokens=False)["input_ids"]
    data = list(expl[0].data)
    words = data[: len(data) - 1]  # the prompt's kept tokens; the last feature is the first generated token
    assert words == ["the", "movie", "was", "good"]
    full = ap.explain(model, tok, messages, method="cplrp", max_new_tokens=2, special_tokens=True)
    assert full.values[0].shape == (p + 1, 2)  # every template token is there when asked for
    kept = ~np.asarray(spec.special[:p])
    np.testing.assert_allclose(expl.values[0][:-1], full.values[0][:p][kept], atol=0)
    # one message after another: both users' words, none of the markers
    two = [{"role": "system", "content": "be fun"}, {"role": "user", "content": "a bad film"}]
    assert list(ap.explain(model, tok, two, method="cplrp", max_new_tokens=1)[0].data) == [
        "be",
        "fun",
        "a",
        "bad",
        "film",
    ]
    # a content that also occurs in the template's markers or in an earlier message is found at its own place
    same = [{"role": "user", "content": "user"}, {"role": "assistant", "content": "user"}]
    word = [tok.decode([i]) for i in tok("user", add_special_tokens=False)["input_ids"]]
    assert list(ap.explain(model, tok, same, method="cplrp", max_new_tokens=1)[0].data) == word + word
    # the next token of a chat prompt: one output
    one = ap.explain(model, tok, messages, method="cplrp")
    assert one.values[0].shape == (4,) and "next token" in str(one.output_names)


def test_chat_prompt_bad_inputs():
    model, tok = gpt2_lm()
    with pytest.raises(InputError, match="has no chat template"):
        ap.explain(model, tok, [{"role": "user", "content": TEXT}], method="cplrp", max_new_tokens=2)
    with pytest.raises(InputError, match="chat message 1"):
        resolve(model, chat_tokenizer(), [{"role": "user"}], max_new_tokens=2)
    with pytest.raises(InputError, match="empty"):
        resolve(model, chat_tokenizer(), [{"role": "user", "content": " "}], max_new_tokens=2)
    upper = chat_tokenizer()
    upper.chat_template = TEMPLATE.replace("m['content']", "m['content'] | upper")
    with pytest.raises(InputError, match="verbatim"):
        resolve(model, upper, [{"role": "user", "content": TEXT}], max_new_tokens=2)


def test_a_generation_that_stops_early_explains_what_it_generated_and_says_so():
    model, tok = gpt2_lm()
    greedy = resolve(model, tok, TEXT, max_new_tokens=4).meta["generated_ids"]
    stop = greedy[1]
    assert stop not in greedy[:1]
    model = copy.deepcopy(model)
    model.generation_config.eos_token_id = stop  # the second token now ends the generation
    expl = ap.explain(model, tok, TEXT, method="cplrp", max_new_tokens=4)
    info = expl.generation[0]
    assert info["generated_ids"] == greedy[:2] and info["stopped_early"] is True
    assert "after 2 of the 4 tokens" in info["stopped_reason"]
    assert expl.values[0].shape[1] == 2 and expl.method == "cplrp"
    # a contrast continuation asked for the 4 tokens: its first 2 are compared with the 2 generated
    against = ap.explain(model, tok, TEXT, method="cplrp", max_new_tokens=4, contrast="a bad film and")
    c = tok("a bad film and", add_special_tokens=False)["input_ids"]
    assert against.generation[0]["contrast_ids"] == c[:2] and against.generation[0]["stopped_early"] is True
    full = ap.explain(gpt2_lm()[0], tok, TEXT, method="cplrp", max_new_tokens=4)
    assert full.generation[0]["stopped_early"] is False


def test_the_report_names_both_tokens_of_every_step(lm):
    model, tok = lm
    page = ap.report(model, tok, TEXT, max_new_tokens=3, contrast_token="bad", shap_evals=0)
    spec = resolve(model, tok, TEXT, max_new_tokens=3, contrast_token="bad")
    html = page.html
    for token in spec.meta["generated_tokens"]:
        assert f"&#x27;{token}&#x27; rather than &#x27;bad&#x27;" in html
    assert "log p(token) − log p(contrast token)" in html
    # attention-only methods do not depend on the explained output: the default list leaves them out
    assert "rollout" not in html and "cplrp_mask" in html


def test_the_report_says_a_generation_stopped_early():
    model, tok = gpt2_lm()
    model.generation_config.eos_token_id = resolve(model, tok, TEXT, max_new_tokens=4).meta["generated_ids"][1]
    html = ap.report(model, tok, TEXT, max_new_tokens=4, methods=["cplrp"], shap_evals=0).html
    assert "after 2 of the 4 tokens asked for" in html


@pytest.mark.parametrize("model_type", [t for t in zoo_types() if ZOO[t][0] in ("decoder", "seq2seq")])
def test_every_language_model_of_the_zoo_explains_each_step_from_one_forward(model_type):
    """The default method (the most faithful one that supports the model) on every decoder and encoder-decoder."""
    style = "gpt" if ZOO[model_type][0] == "decoder" else "seq2seq"
    tok = tiny_tokenizer(style)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tiny_model(model_type, vocab_size=len(tiny_vocab(style)))
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")  # grouped_mm has no float64 kernel
    options = {"max_new_tokens": 3, "contrast_token": "bad", "special_tokens": True}
    explainer = ap.AttentionExplainer(model, tok, **options)
    expl = explainer(TEXT)
    assert expl.method == explainer.method_name == "cplrp_mask" and explainer.forward_passes == 1
    spec = resolve(model, tok, TEXT, max_new_tokens=3, contrast_token="bad")
    alone, _ = single_runs(model, tok, spec, expl.method)
    tol = explain_tolerance(model, tok, [TEXT], **options)
    np.testing.assert_allclose(expl.values[0], alone, atol=tol)


def test_a_batch_of_chat_prompts_and_a_chat_prompt_too_long():
    model, _ = gpt2_lm()
    tok = chat_tokenizer()
    chats = [[{"role": "user", "content": "a bad film"}], [{"role": "user", "content": "the movie was good"}]]
    expl = ap.explain(model, tok, chats, method="cplrp", max_new_tokens=2)
    assert [list(d)[:-1] for d in expl.data] == [["a", "bad", "film"], ["the", "movie", "was", "good"]]
    with pytest.raises(InputError, match="too many for the model's 8"):
        ap.explain(model, tok, chats[0], method="cplrp", max_new_tokens=2, max_length=8)
