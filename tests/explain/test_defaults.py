"""The default method: the benchmark's ranking, written once, and the first ranked method that supports the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import attn_plugins as ap
from attn_plugins.errors import UnsupportedModelError
from attn_plugins.explain import defaults
from attn_plugins.explain.defaults import Choice, choose, ranking, ranking_from_benchmark, refusal
from attn_plugins.methods import get_method
from attn_plugins.methods.base import Method
from attn_plugins.zoo import tiny_model, tiny_tokenizer, tiny_vocab

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = ROOT / "benchmarks" / "results" / "faithful.json"
PACKAGED = ROOT / "attn_plugins" / "explain" / defaults.RANKING_FILE


def test_the_packaged_ranking_is_what_the_benchmark_json_gives():
    result = json.loads(BENCHMARK.read_text(encoding="utf-8"))
    assert json.loads(PACKAGED.read_text(encoding="utf-8")) == ranking_from_benchmark(result)


def test_the_ranking_orders_methods_by_their_headline_spearman():
    result = json.loads(BENCHMARK.read_text(encoding="utf-8"))
    test = result["minilm"]["pairings"]["topic"]["splits"]["test"]
    rows = ranking_from_benchmark(result)["ranking"]
    # Read by hand from the JSON: the relevance methods by name, rollout and gae by their weighted rows
    # (the explainer's default for a pooled target), grad_attention by its first row.
    by_name = {r["method"]: r for r in rows}
    assert by_name["cplrp_mask"]["spearman"] == round(test["cplrp_mask"]["spearman"]["mean"], 4)
    assert by_name["rollout"]["entry"] == "rollout[weighted]"
    assert by_name["grad_attention"]["entry"] == "grad_attention[first]"
    assert by_name["rollout"]["spearman"] == round(test["rollout[weighted]"]["spearman"]["mean"], 4)
    spearman = [r["spearman"] for r in rows]
    assert spearman == sorted(spearman, reverse=True)
    assert ranking()[0] == "cplrp_mask" and ranking().index("cplrp_mask") < ranking().index("rollout")
    # Only registered built-in methods: no shap, captum, occlusion or unregistered variants.
    assert "attnlrp_mask" not in by_name and all(not m.startswith(("shap", "captum")) for m in by_name)
    assert set(by_name) == set(ranking())


def test_bert_gets_the_most_faithful_method():
    model, tok = tiny_model("bert", vocab_size=len(tiny_vocab("bert"))), tiny_tokenizer("bert")
    choice = choose(model, tok, "self")
    assert choice == Choice(ranking()[0], [])
    e = ap.explain(model, tok, "the movie was very good")
    assert e.method == ranking()[0] and e.method_choice == {"method": ranking()[0], "refused": []}
    assert ap.AttentionExplainer(model, tok).method_name == ranking()[0]


@pytest.mark.parametrize("model_type", ["gpt2", "distilbert", "marian"])
def test_the_choice_is_the_first_ranked_method_that_supports_the_model(model_type):
    style = {"gpt2": "gpt", "distilbert": "bert", "marian": "seq2seq"}[model_type]
    model, tok = tiny_model(model_type, vocab_size=len(tiny_vocab(style))), tiny_tokenizer(style)
    kind = "cross" if model_type == "marian" else "self"
    choice = choose(model, tok, kind)
    order = list(ranking())
    passed = order[: order.index(choice.method)]
    # Every method ranked above the choice was refused, with its own reason, and the choice was not.
    assert [m for m, _ in choice.refused] == passed
    for name, reason in choice.refused:
        assert reason and reason == refusal(get_method(name), model, tok, kind)
    assert refusal(get_method(choice.method), model, tok, kind) is None
    e = ap.explain(model, tok, "the movie was very good")
    assert e.method == choice.method
    assert e.method_note == choice.note()
    for name, reason in choice.refused:
        assert f"{name}: refused ({reason})" in e.method_note


class _Refuses(Method):
    name = "refuses"

    def check_support(self, model, tokenizer=None):
        raise UnsupportedModelError(f"no rule for {type(model).__name__}")


class _SelfOnly(Method):
    name = "self_only"
    kinds = ("self",)


def test_choose_walks_the_ranking_and_says_why_each_better_method_was_passed_over(monkeypatch):
    methods = {"refuses": _Refuses(), "self_only": _SelfOnly(), "raw": get_method("raw")}
    monkeypatch.setattr(defaults, "ranking", lambda: ("refuses", "self_only", "raw"))
    import attn_plugins.methods

    # choose() looks the methods up when it runs (the module is light: the CLI's help reads it).
    monkeypatch.setattr(attn_plugins.methods, "get_method", methods.__getitem__)
    model = tiny_model("bert", vocab_size=len(tiny_vocab("bert")))
    assert choose(model, None, "self") == Choice("self_only", [("refuses", "no rule for BertModel")])
    cross = choose(model, None, "cross")
    assert cross.method == "raw"
    assert cross.refused[1] == ("self_only", "it is defined on self attention; this target reads cross attention")
    assert cross.note().startswith("raw: the most faithful method")
    assert "refuses: refused (no rule for BertModel); self_only: refused (it is defined on self" in cross.note()
    monkeypatch.setattr(defaults, "ranking", lambda: ("refuses",))
    with pytest.raises(UnsupportedModelError, match="no ranked method supports BertModel: refuses: no rule"):
        choose(model, None, "self")


def test_support_checks_run_no_forward_and_match_what_the_methods_do():
    llama = tiny_model("llama", vocab_size=len(tiny_vocab("gpt")))
    calls = []
    handle = llama.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        for name in ranking():
            get_method(name).supports(llama, tiny_tokenizer("gpt"))
    finally:
        handle.remove()
    assert calls == []
    # A refusal is the error the method itself raises when it runs.
    bert = tiny_model("bert", vocab_size=len(tiny_vocab("bert")))
    gpt_tok = tiny_tokenizer("gpt")  # no mask token
    reason = refusal(get_method("cplrp_mask"), bert, gpt_tok, "self")
    if reason is not None:
        with pytest.raises(Exception, match=reason.split(";")[0][:30]):
            get_method("cplrp_mask").capture(bert, gpt_tok, "the movie", gradient_target=lambda o: o[0].sum())
    for name in ("decompx", "alti", "value_zeroing"):
        why = refusal(get_method(name), llama, gpt_tok, "self")
        if why is not None:
            with pytest.raises(UnsupportedModelError):
                get_method(name).capture(llama, gpt_tok, "the movie", gradient_target=lambda o: o.logits[0, -1, 0])


def test_an_explicit_method_is_used_as_given():
    model, tok = tiny_model("gpt2", vocab_size=len(tiny_vocab("gpt"))), tiny_tokenizer("gpt")
    e = ap.explain(model, tok, "the movie was very good", method="rollout")
    assert e.method == "rollout" and e.method_choice is None and e.method_note is None
    assert np.isfinite(np.asarray(e.values[0], dtype=float)).all()


def test_the_report_recommends_the_default_and_says_why_better_methods_were_refused():
    from html import escape

    model, tok = tiny_model("gpt2", vocab_size=len(tiny_vocab("gpt"))), tiny_tokenizer("gpt")
    choice = choose(model, tok, "self")
    page = ap.report(model, tok, "the movie was very good", methods=["raw"], shap_evals=0)
    sentence = (
        "Recommended method for this model (faithfulness benchmark, Spearman with exact Shapley values): "
        + choice.note()
    )
    assert escape(sentence) in page.html
    for name, _ in choice.refused:
        assert f"{name}: refused (" in page.html
