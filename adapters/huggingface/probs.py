"""The eager attention computation out of place (autograd): grouped key/value heads repeated, softmax probabilities."""

from __future__ import annotations

import torch

from attn_plugins.adapters import rule_softcap


def repeat_kv(states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, H_kv, T, d] -> [B, H_kv * n_rep, T, d], each key/value head repeated for its query heads (GQA)."""
    if n_rep == 1:
        return states
    b, h, t, d = states.shape
    return states[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def attention_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float | None = None,
    softcap: float | None = None,
    position_bias: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    causal_if_unmasked: bool = False,
    with_sink: bool = False,
    rule: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention probabilities [B, H, Q, K] in float32 (float64 for a float64 model), out of place
    (autograd), as eager computes them.

    With learned sinks the rows keep the model's exact weights (they sum to less than 1); ``with_sink``
    also returns the sink's share of each row ``[B, H, Q]`` (None without sinks).
    """
    work = torch.promote_types(query.dtype, torch.float32)
    n_rep = query.shape[1] // key.shape[1]
    k = repeat_kv(key, n_rep).to(work)
    q_len, k_len = query.shape[2], k.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query.to(work), k.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = rule_softcap(rule, scores, softcap)  # an attention rule takes the identity rule on tanh
    if position_bias is not None:
        scores = scores + position_bias[..., :k_len].to(work)
    if attention_mask is not None:
        mask = attention_mask[..., :k_len]
        if mask.dtype == torch.bool:
            # Eager masks add the dtype's minimum; filling with it keeps fully masked rows uniform, like eager.
            scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
        else:
            scores = scores + mask.to(work)
    elif causal_if_unmasked and q_len > 1:
        # sdpa's is_causal: upper-left aligned (only used when no mask was built).
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~allowed, torch.finfo(torch.float32).min)
    sink = None
    if sinks is not None:
        # A learned sink logit per head takes part in the softmax; its column is the mass no token gets (gpt-oss).
        col = sinks.to(work).reshape(1, -1, 1, 1).expand(scores.shape[0], -1, q_len, 1)
        logits = torch.cat([scores, col], dim=-1)
        logits = logits - logits.amax(dim=-1, keepdim=True)
        full = torch.softmax(logits, dim=-1)
        probs, sink = full[..., :-1], full[..., -1]
    else:
        probs = torch.softmax(scores, dim=-1)
    return (probs, sink) if with_sink else probs
