"""Bad input to ap.capture: each case gives a clear, predictable result."""

from __future__ import annotations

import warnings

import pytest
import torch

import attn_plugins as ap
from attn_plugins.adapters import move_inputs
from attn_plugins.errors import AttnPluginsError, InputError, UnsupportedModelError
from attn_plugins.zoo import peaked_, tiny_bert


def test_unknown_architecture_names_the_class_and_the_plugin_docs():
    class MyScorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, input_ids):
            return self.lin(input_ids.float())

    with pytest.raises(UnsupportedModelError) as err:
        ap.capture(MyScorer(), inputs={"input_ids": torch.ones(1, 4, dtype=torch.long)})
    message = str(err.value)
    assert "MyScorer" in message and "docs/plugins.md" in message
    assert isinstance(err.value, AttnPluginsError)


def test_too_long_text_raises_unless_truncation(bert, tok):
    text = " ".join(["movie"] * 100)  # 102 tokens with [CLS]/[SEP]; the model takes 64 positions
    with pytest.raises(InputError, match="at most 64"):
        ap.capture(bert, tok, text)
    rec = ap.capture(bert, tok, text, truncation=True)
    assert rec.meta["truncated"] is True and len(rec.tokens) == 64
    assert ap.capture(bert, tok, "short movie").meta["truncated"] is False
    rec.validate()


@pytest.mark.parametrize("text", ["", "   ", ["fine text", ""], []])
def test_empty_text_raises(bert, tok, text):
    with pytest.raises(InputError, match="empty"):
        ap.capture(bert, tok, text)


def test_empty_input_ids_raise(bert):
    with pytest.raises(InputError, match="empty"):
        ap.capture(bert, inputs={"input_ids": torch.zeros(1, 0, dtype=torch.long)})


def test_training_mode_warns_and_still_captures(tok):
    model = peaked_(tiny_bert(num_labels=2)).train()
    with pytest.warns(UserWarning, match="training mode"):
        rec = ap.capture(model, tok, "the movie")
    rec.validate()
    assert model.training  # the caller's mode is left alone


def test_half_precision_on_cpu_captures_in_float32(bert, tok):
    half = peaked_(tiny_bert(num_labels=2)).half()
    assert next(half.parameters()).dtype == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = ap.capture(half, tok, "the movie was great")
        ref = ap.capture(bert, tok, "the movie was great")
    assert rec.meta["model_dtype"] == "float16" and rec.meta["adapter"] == "huggingface"
    # Probabilities are recomputed in float32 from half-precision queries and keys.
    assert rec.attentions["self"].dtype == torch.float32
    rec.validate()
    # The model itself runs in half precision (its hidden states are rounded), so the weights are near,
    # not equal to, the float32 model's; eager half precision rounds the scores too (by up to ~3e-2 here).
    eager_half = ap.capture(half, tok, "the movie was great", adapter="eager")
    assert (rec.attentions["self"] - ref.attentions["self"]).abs().max() < 0.1
    assert (rec.attentions["self"] - eager_half.attentions["self"]).abs().max() < 0.1
    assert next(half.parameters()).dtype == torch.float16  # the model is not converted


def test_model_on_meta_device_is_refused(tok):
    with torch.device("meta"):
        model = tiny_bert()
    with pytest.raises(InputError, match="meta"):
        ap.capture(model, tok, "the movie")


def test_inputs_follow_the_model_device_and_records_come_back_on_cpu(bert, tok):
    moved = move_inputs({"input_ids": torch.ones(1, 3, dtype=torch.long), "n": 3}, "meta")
    assert moved["input_ids"].device.type == "meta" and moved["n"] == 3
    rec = ap.capture(bert, tok, "the movie")
    assert rec.attentions["self"].device.type == "cpu"
    assert rec.meta["model_device"] == "cpu"


def test_layer_and_head_out_of_range(bert, tok):
    with pytest.raises(InputError, match="layer 5"):
        ap.capture(bert, tok, "the movie", layers=[5])
    with pytest.raises(InputError, match="head 9"):
        ap.capture(bert, tok, "the movie", heads=[9])


def test_text_and_inputs_together_or_text_without_tokenizer(bert, tok):
    with pytest.raises(InputError):
        ap.capture(bert, tok, "text", inputs={"input_ids": torch.ones(1, 2, dtype=torch.long)})
    with pytest.raises(InputError, match="tokenizer"):
        ap.capture(bert, None, "text")


def test_unknown_adapter_name(bert, tok):
    with pytest.raises(ap.PluginError, match="huggingface"):
        ap.capture(bert, tok, "the movie", adapter="no_such_adapter")


class _Attends(torch.nn.Module):
    """One nn.MultiheadAttention over embeddings, called positionally (x) or keyword-only (*, x)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x)[0]


class _Positional(_Attends):
    def forward(self, x):
        return self.run(x)


class _KeywordOnly(_Attends):
    def forward(self, *, x):
        return self.run(x)


@pytest.mark.parametrize(
    "inputs",
    [torch.zeros(1, 0, 8), torch.zeros(0, 3, 8), (torch.zeros(1, 0, 8),)],
    ids=["no position", "no example", "tuple"],
)
def test_a_zero_length_sequence_to_a_torch_model_is_an_input_error(inputs):
    with pytest.raises(InputError, match=r"attn was given an empty sequence \(shape \((1, 0|0, 3), 8\)\)"):
        ap.capture(_Positional().eval(), inputs=inputs)
    with pytest.raises(InputError, match="empty sequence"):
        ap.capture(_KeywordOnly().eval(), inputs={"x": torch.zeros(1, 0, 8)})


def test_empty_inputs_embeds_are_an_input_error(bert):
    with pytest.raises(InputError, match=r"inputs_embeds of shape \(1, 0, 32\) hold no position"):
        ap.capture(bert, inputs={"inputs_embeds": torch.zeros(1, 0, 32)})


def test_inputs_that_do_not_fit_the_forward_name_the_argument_and_the_signature():
    x = torch.randn(1, 3, 8)
    keyword_only, positional = _KeywordOnly().eval(), _Positional().eval()
    with pytest.raises(InputError, match=r"_KeywordOnly\.forward\(\*, x\): got an unexpected keyword argument 'y'"):
        ap.capture(keyword_only, inputs={"x": x, "y": x})
    with pytest.raises(
        InputError,
        match=r"_KeywordOnly\.forward\(\*, x\): 1 positional .* x is keyword-only: pass inputs=\{'x': \.\.\.\}",
    ):
        ap.capture(keyword_only, inputs=(x,))
    with pytest.raises(InputError, match=r"_Positional\.forward\(x\): 2 positional inputs given, it takes 1"):
        ap.capture(positional, inputs=(x, x))
    with pytest.raises(InputError, match=r"_Positional\.forward\(x\): missing a required argument: 'x'"):
        ap.capture(positional, inputs={"z": x})
    # inputs that fit are captured as given
    assert ap.capture(keyword_only, inputs={"x": x}).attentions["self"].shape == (1, 2, 3, 3)
    assert ap.capture(positional, inputs=(x,)).attentions["self"].shape == (1, 2, 3, 3)


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_a_left_padding_tokenizer_gives_records_equal_to_each_text_alone(model_type):
    """Absolute positions (BERT's, GPT-2's) shift under left padding; capture pads after the text instead."""
    from attn_plugins.zoo import tiny_model, tiny_tokenizer, tiny_vocab

    style = "bert" if model_type == "bert" else "gpt"
    tok = tiny_tokenizer(style)
    tok.padding_side = "left"
    model = peaked_(tiny_model(model_type, vocab_size=len(tiny_vocab(style))))
    texts = ["the movie was good and the music too", "a bad film"]
    for text, rec in zip(texts, ap.capture(model, tok, texts)):
        alone = ap.capture(model, tok, text)
        assert rec.tokens == alone.tokens
        torch.testing.assert_close(rec.attentions["self"], alone.attentions["self"], atol=1e-5, rtol=0)
    assert tok.padding_side == "left"
