"""Relevance propagation rules of Chefer et al. 2021 (generic attention explainability), shared by methods.

R starts as the identity (each token is relevant to itself through the residual stream), and every
attention layer adds the relevance that flows through it: ``R ← R + Ā·R`` for self-attention
(rules 6-7) and ``R_sq ← R_sq + R̄_ssᵀ·Ā_sq·R̄_qq`` for cross attention (rule 10), where ``R̄`` removes
the identity, row-normalizes and adds the identity back (eqs. 8-9).
"""

from __future__ import annotations

import torch


def self_rule(maps: torch.Tensor) -> torch.Tensor:
    """R for one self-attention stack: [L, N, N] head-combined maps, applied first layer to last."""
    n = maps.shape[-1]
    r = torch.eye(n, dtype=maps.dtype)
    for a in maps:  # a loop over layers: each product depends on the previous one
        r = r + a @ r
    return r


def normalize_residual(r: torch.Tensor) -> torch.Tensor:
    """R̄ = rownorm(R - I) + I; rows of R - I that sum to zero stay zero (no relevance to spread yet)."""
    eye = torch.eye(r.shape[-1], dtype=r.dtype)
    hat = r - eye
    sums = hat.sum(-1, keepdim=True)
    safe = torch.where(sums.abs() > 0, sums, torch.ones_like(sums))
    return torch.where(sums.abs() > 0, hat / safe, torch.zeros_like(hat)) + eye


def encoder_decoder_rule(enc_maps: torch.Tensor, dec_maps: torch.Tensor, cross_maps: torch.Tensor) -> torch.Tensor:
    """R_de [T, S]: relevance of source tokens to each decoder token, through encoder, decoder and cross maps.

    ``enc_maps`` [L_e, S, S], ``dec_maps`` [L_d, T, T], ``cross_maps`` [L_d, T, S]. The encoder never
    attends to the decoder, so R_ed = 0 and rule 11 adds nothing to R_dd.
    """
    r_ee = self_rule(enc_maps)
    r_ee_bar = normalize_residual(r_ee)
    t, s = cross_maps.shape[-2:]
    r_dd = torch.eye(t, dtype=cross_maps.dtype)
    r_de = torch.zeros(t, s, dtype=cross_maps.dtype)
    for a_dd, a_de in zip(dec_maps, cross_maps):  # decoder layer: self-attention, then cross attention
        r_de = r_de + a_dd @ r_de
        r_dd = r_dd + a_dd @ r_dd
        r_de = r_de + normalize_residual(r_dd).T @ a_de @ r_ee_bar
    return r_de
