"""The capture kernel against eager attention written out in float64: scale, masks and causal row blocks."""

from __future__ import annotations

import pytest
import torch

from attn_adapters.kernel import _CAUSAL_BLOCK, Dest, attend

# float32 kernel against a float64 reference of the same scores: float32 rounding of probabilities <= 1.
ATOL = 1e-6


def eager(q, k, v, mask, scale):
    """Eager attention in float64: softmax(q kᵀ · scale + mask) and its output [B, Q, H, d]."""
    s = q.double() @ k.double().transpose(-1, -2) * scale
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(torch.float64).min) if mask.dtype == torch.bool else s + mask.double()
    p = torch.softmax(s, -1)
    return p, (p @ v.double()).transpose(1, 2)


def qkv(b: int, h: int, n: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g) for _ in range(3)]


def run(q, k, v, mask, **kw):
    probs = torch.empty(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = attend(q, k, v, mask, dests=[Dest(probs[i]) for i in range(q.shape[0])], **kw)
    return probs, out


def test_no_scaling_given_means_one_over_the_square_root_of_the_head_size():
    q, k, v = qkv(1, 2, 5, 16)
    probs, out = run(q, k, v, None, scaling=None)
    ref, ref_out = eager(q, k, v, None, 16**-0.5)
    torch.testing.assert_close(probs.double(), ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=0)
    unscaled, _ = eager(q, k, v, None, 1.0)
    assert (unscaled - ref).abs().max() > 0.1  # the scale matters on these scores
    probs, _ = run(q, k, v, None, scaling=0.5)  # a given scale is used as given
    torch.testing.assert_close(probs.double(), eager(q, k, v, None, 0.5)[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_a_module_marked_causal_with_a_mask_that_is_not_causal_sees_every_key_it_allows(kind):
    """Causal modules are computed in row blocks that skip later keys only when the mask hides them all.

    Here the mask hides one padded key and nothing else (an encoder-style mask given to a module the
    model marks causal), over more rows than one block, so every block must still see the later keys.
    """
    n = _CAUSAL_BLOCK + 72
    q, k, v = qkv(1, 2, n, 8, seed=1)
    keep = torch.ones(1, 1, n, n, dtype=torch.bool)
    keep[..., n - 1] = False  # the last key is padding; the rest is visible to every row, later keys included
    mask = keep if kind == "bool" else torch.zeros(1, 1, n, n).masked_fill(~keep, torch.finfo(torch.float32).min)
    probs, out = run(q, k, v, mask, scaling=None, causal=True)
    ref, ref_out = eager(q, k, v, keep, 8**-0.5)
    torch.testing.assert_close(probs.double(), ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=0)
    assert probs[0, :, 0, 1:].sum() > 0.5  # the first row does attend to later keys
    # and a causal mask over the same rows is computed in blocks that match it too
    causal = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
    probs, _ = run(q, k, v, causal, scaling=None, causal=True)
    torch.testing.assert_close(probs.double(), eager(q, k, v, causal, 8**-0.5)[0], atol=ATOL, rtol=0)
