"""The torch_mha adapter: nn.MultiheadAttention and nn.TransformerEncoder read through hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attn_plugins as ap
from attn_adapters.torch_mha import TorchMHAAdapter
from attn_plugins.adapters import CaptureOptions
from attn_plugins.capture import encode_inputs


class Encoder(nn.Module):
    """Token ids -> nn.TransformerEncoder (which calls its attention with need_weights=False)."""

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.batch_first = batch_first
        self.emb = nn.Embedding(50, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2)
        with torch.no_grad():  # peaked attention: scale the query/key projections
            for lyr in self.encoder.layers:
                lyr.self_attn.in_proj_weight[:32] *= 4

    def forward(self, input_ids, src_key_padding_mask=None):
        x = self.emb(input_ids)
        if not self.batch_first:
            x = x.transpose(0, 1)
        out = self.encoder(x, src_key_padding_mask=src_key_padding_mask)
        return out if self.batch_first else out.transpose(0, 1)


def reference(model: Encoder, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Per-layer per-head weights, asking each attention module directly for them."""
    pad = ~mask.bool()
    x = model.emb(ids)
    if not model.batch_first:
        x = x.transpose(0, 1)
    weights = []
    with torch.no_grad():
        for layer in model.encoder.layers:
            _, w = layer.self_attn(x, x, x, key_padding_mask=pad, need_weights=True, average_attn_weights=False)
            weights.append(w)
            x = layer(x, src_key_padding_mask=pad)
    return weights


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_matches_need_weights(batch_first):
    model = Encoder(batch_first).eval()
    ids = torch.tensor([[3, 7, 9, 11, 4, 5], [8, 2, 6, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    nested = model.encoder.use_nested_tensor
    inputs = {"input_ids": ids, "attention_mask": mask}
    recs = ap.capture(model, inputs=inputs)
    assert recs[0].meta["adapter"] == "torch_mha"
    ref = reference(model, ids, mask)
    for b, rec in enumerate(recs):
        rec.validate()
        n = int(mask[b].sum())
        assert rec.attentions["self"].shape == (2, 4, n, n)
        for layer in range(2):
            assert torch.allclose(rec.attentions["self"][layer], ref[layer][b, :, :n, :n], atol=1e-6)
    # The output equals an uncaptured (fast-path) forward on the real tokens; nothing stays hooked.
    with torch.no_grad():
        plain = model(ids, src_key_padding_mask=~mask.bool())
        output, _ = TorchMHAAdapter().run(model, encode_inputs(model, inputs), CaptureOptions())
    real = mask.bool()
    assert torch.allclose(output[real], plain[real], atol=1e-5)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.encoder.use_nested_tensor is nested  # restored


def test_caller_asking_need_weights_false_still_gets_none():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(1)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.seen = []

        def forward(self, inputs_embeds):
            out, w = self.attn(inputs_embeds, inputs_embeds, inputs_embeds, need_weights=False)
            self.seen.append(w)
            return out

    block = Block().eval()
    x = torch.randn(1, 5, 8)
    with torch.no_grad():
        plain = block(x)
    rec = ap.capture(block, inputs={"inputs_embeds": x})
    assert block.seen[-1] is None  # the caller's contract is kept
    assert rec.tokens == [str(i) for i in range(5)]
    with torch.no_grad():
        _, w = block.attn(x, x, x, need_weights=True, average_attn_weights=False)
        assert torch.allclose(block(x), plain)
    assert torch.allclose(rec.attentions["self"][0], w[0], atol=1e-6)


def test_values_norms_and_gradients():
    model = Encoder().eval()
    ids = torch.tensor([[3, 7, 9, 11]])
    rec = ap.capture(
        model,
        inputs={"input_ids": ids},
        values=True,
        value_norms=True,
        qk=True,
        gradients=True,
        gradient_target=lambda out: out[0, 0, 0],  # not a sum: a LayerNorm output sums to a constant
    )
    assert rec.values["self"].shape == (2, 4, 4, 4) and rec.value_norms["self"].shape == (2, 4, 4)
    assert rec.gradients["self"].shape == rec.attentions["self"].shape and rec.gradients["self"].abs().sum() > 0
    mha = model.encoder.layers[0].self_attn
    x = model.emb(ids)
    v = nn.functional.linear(x, mha.in_proj_weight[32:], mha.in_proj_bias[32:]).reshape(1, 4, 4, 4).transpose(1, 2)
    assert torch.allclose(rec.values["self"][0], v[0], atol=1e-5)
    w = mha.out_proj.weight.reshape(16, 4, 4)
    expected = torch.einsum("hkd,ohd->hko", v[0], w).norm(dim=-1)
    assert torch.allclose(rec.value_norms["self"][0], expected.detach(), atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_supports_and_refusals():
    adapter = TorchMHAAdapter()
    assert adapter.supports(Encoder()) and not adapter.supports(nn.Linear(2, 2))
    with pytest.raises(ap.InputError, match="input_ids or inputs_embeds"):
        ap.capture(Encoder(), inputs={"pixel_values": torch.zeros(1, 3)}, adapter="torch_mha")

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, inputs_embeds):
            return self.attn(inputs_embeds, inputs_embeds * 2, inputs_embeds)[0]

    with pytest.raises(ap.UnsupportedModelError, match="cross-attention"):
        ap.capture(Cross(), inputs={"inputs_embeds": torch.randn(1, 3, 8)})
