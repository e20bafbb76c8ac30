"""Verification matrix: captured attention of 32 tiny architectures against eager output_attentions."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers.models import on_attention_interface

from attn_plugins.zoo import deep_overrides, tiny_inputs, tiny_model, verify_capture, zoo_types


def test_matrix_covers_the_issue_list():
    required = (
        "bert roberta distilbert albert electra deberta-v2 xlm-roberta mpnet modernbert gpt2 gpt_neox gptj llama "
        "mistral mixtral qwen2 qwen3 gemma gemma2 phi phi3 opt falcon bloom t5 bart marian mbart pegasus vit whisper"
    ).split()
    assert set(required) <= set(zoo_types())
    assert len(zoo_types()) >= 25


@pytest.mark.parametrize("model_type", zoo_types())
def test_captured_equals_eager(model_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = verify_capture(model_type)
    assert row["max_attention_diff"] <= 1e-5, row
    assert row["max_output_diff"] <= 1e-5, row
    # The adapter follows from the model's code, not from a list: transformers moves models onto its
    # AttentionInterface release by release (Falcon in 5.25), and those must leave the eager fallback.
    if on_attention_interface(model_type):
        assert row["adapter"] == "huggingface" and row["fallback"] is None, row
    else:
        assert row["adapter"] == "eager" and row["fallback"], row
    expected_kinds = (
        ["encoder", "decoder", "cross"]
        if model_type in ("t5", "bart", "marian", "mbart", "pegasus", "whisper")
        else ["self"]
    )
    assert row["kinds"] == expected_kinds


@pytest.mark.parametrize("model_type", zoo_types())
def test_values_and_value_norms_match_the_output_projection(model_type):
    """The located output projection really receives sum_j a_ij v_j per head, for every interface type.

    Its input is hooked during the captured forward and compared with the captured attention times the
    captured values; the value norms are then checked as ‖W_h v_j‖ with that projection's weight.
    """
    from attn_adapters.huggingface import CaptureContext, output_projection, output_projection_module
    from attn_plugins.adapters import CaptureOptions

    model = tiny_model(model_type)
    if not on_attention_interface(model_type):
        # Off the interface no capture function runs (capture reads eager output_attentions): the adapter
        # must not claim relevance rules it cannot apply there.
        from attn_adapters.huggingface import HuggingFaceAdapter

        assert HuggingFaceAdapter().attention_rules(model) == ()
        return
    inputs = tiny_inputs(model, batch=1)
    ctx = CaptureContext(model, CaptureOptions(values=True, value_norms=True))
    seen: dict[int, list] = {}
    handles = []
    for module in model.modules():
        for attr in ("o_proj", "out_proj", "o", "out_lin", "c_proj", "dense", "Wo", "proj"):
            proj = getattr(module, attr, None)
            if isinstance(proj, torch.nn.Module) and id(proj) not in seen:
                seen[id(proj)] = []
                handles.append(proj.register_forward_pre_hook(lambda m, a: seen[id(m)].append(a[0].detach())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with ctx.active(), torch.no_grad():
                model(**inputs)
        finally:
            for h in handles:
                h.remove()
    assert ctx.steps[0]
    used: dict[int, int] = {}
    for call in ctx.steps[0]:
        module = model.get_submodule(call.site.name)
        proj = output_projection_module(model, call.site, module)
        k = used.get(id(proj), 0)
        used[id(proj)] = k + 1
        fed = seen[id(proj)][k]  # [B, Q, H * d]
        mixed = torch.einsum("bhqk,bhkd->bqhd", call.probs, call.extras["values"]).reshape(fed.shape)
        assert torch.allclose(mixed, fed, atol=1e-5), call.site.name
        w = output_projection(model, call.site, module)
        v = call.extras["values"]
        expected = torch.einsum("bhkd,ohd->bhko", v, w.reshape(w.shape[0], v.shape[1], -1)).norm(dim=-1)
        assert torch.allclose(call.extras["value_norms"], expected, atol=1e-5)


@pytest.mark.parametrize("model_type", ["bert", "llama", "bart", "bloom"])
def test_captured_equals_eager_past_ten_layers(model_type):
    """12 layers: layer order by module name ('layer.10' before 'layer.2') shows only from 11 layers on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = verify_capture(model_type, **deep_overrides(model_type, 12))
    assert row["layers"] == 12, row
    assert row["max_attention_diff"] <= 1e-5, row
    assert row["max_output_diff"] <= 1e-5, row
