"""Fitting a learned attributor: Shapley targets on the user's texts, features from one capture, a small head.

Targets are the model's Shapley values of the explained output, masking as shap's ``Text`` masker does
(the mask token written in place of each masked token, special tokens kept): exact (every coalition) for
texts of at most ``max_exact`` maskable tokens, seeded estimates of the stratified design
(:func:`~attn_plugins.explain.estimators.estimate_shapley`) for longer ones. Each text's values are divided
by their root mean square over its maskable tokens, so the head learns the shape of the values, which
Spearman and every ranking read, not each text's scale. Texts are split (seeded) into training and
held-out validation texts; the head is trained with MSE and Adam, and training stops when the mean
held-out Spearman has not improved for ``patience`` checks (the best head is kept).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shap
import torch
from scipy.stats import spearmanr

from ..errors import InputError
from ..methods.learned import Head, LearnedAttributor, model_identity
from .estimators import estimate_shapley
from .explainer import AttentionExplainer
from .maskers import exact_shapley, maskable_positions

# At least this many held-out texts, and as many training texts: fewer cannot tell a fit from noise.
MIN_VALIDATION = 4
MIN_TEXTS = 2 * MIN_VALIDATION
# Model evaluations per token for the sampled targets of long texts: the stratified design (the closest of the
# estimators per evaluation in `attn-plugins bench sampling`: 0.99 Spearman with exact values at 100).
SAMPLES_PER_TOKEN = 40


def _masker(tokenizer: Any) -> shap.maskers.Text:
    if getattr(tokenizer, "mask_token", None) is None:
        raise InputError("fit_attributor masks with the tokenizer's mask token, and this tokenizer has none")
    return shap.maskers.Text(tokenizer, mask_token=tokenizer.mask_token, collapse_mask_token=False)


def texts_digest(texts: Sequence[str]) -> str:
    """A digest of the training texts in order (which texts an attributor saw, without storing them)."""
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()[:16]


def _normalized(phi: np.ndarray, players: np.ndarray) -> np.ndarray:
    scale = float(np.sqrt(np.mean(phi[players] ** 2)))
    return phi / scale if scale > 0 else phi


def _spearman(pred: np.ndarray, phi: np.ndarray) -> float:
    if len(phi) < 2 or np.ptp(phi) == 0 or np.ptp(pred) == 0:
        return float("nan")
    return float(spearmanr(pred, phi).statistic)


def _mean_spearman(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray], players: Sequence[np.ndarray]) -> float:
    rho = [_spearman(p[m], t[m]) for p, t, m in zip(preds, targets, players)]
    return float(np.nanmean(rho)) if not np.isnan(rho).all() else float("nan")


def _recorded(value: Any) -> Any:
    """A target argument as the file records it: per-text references as the distinct ones, in order."""
    if isinstance(value, (list, tuple)):
        return list(dict.fromkeys(_recorded(v) for v in value))
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _per_text_groups(texts: Sequence[str], target: dict[str, Any]) -> list[tuple[dict[str, Any], list[int]]]:
    """(target arguments, indices of the texts explained with them): one group unless ``reference`` is a list."""
    reference = target.get("reference")
    if not isinstance(reference, (list, tuple)):
        return [(target, list(range(len(texts))))]
    if len(reference) != len(texts):
        raise InputError(
            f"reference: {len(reference)} reference texts for {len(texts)} texts (one per text, or one for all)"
        )
    if not all(isinstance(r, str) for r in reference):
        raise InputError("reference: a list of reference texts must hold strings only")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(reference):
        groups.setdefault(r, []).append(i)
    return [({**target, "reference": r}, members) for r, members in groups.items()]


def _split(texts: Sequence[str], n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, training) indices, seeded; a text given several times (with other references) stays on one side.

    Otherwise the held-out score would read texts the head was trained on, under another reference.
    """
    distinct = list(dict.fromkeys(texts))
    where: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        where.setdefault(t, []).append(i)
    order = [i for d in np.random.default_rng(seed).permutation(len(distinct)) for i in where[distinct[d]]]
    # Whole texts are held out until at least n_val of the given ones are.
    cut = next(
        k
        for k in range(1, len(order) + 1)
        if k == len(order) or (k >= n_val and texts[order[k]] != texts[order[k - 1]])
    )
    val, train = np.asarray(order[:cut]), np.asarray(order[cut:], dtype=np.int64)
    if len(train) < MIN_VALIDATION:
        raise InputError(
            f"fit_attributor holds out whole texts: {len(distinct)} distinct texts leave fewer than "
            f"{MIN_VALIDATION} to train on; give more distinct texts"
        )
    return val, train


def fit_attributor(
    model: Any,
    tokenizer: Any = None,
    texts: Sequence[str] = (),
    *,
    validation: float = 0.25,
    hidden: int = 0,
    max_exact: int = 10,
    shapley: Sequence[np.ndarray] | None = None,
    epochs: int = 2000,
    patience: int = 20,
    lr: float = 0.01,
    weight_decay: float = 1e-3,
    seed: int = 0,
    path: str | Path | None = None,
    **target: Any,
) -> LearnedAttributor:
    """A :class:`~attn_plugins.methods.learned.LearnedAttributor` trained to predict ``model``'s Shapley values on ``texts``.

    ``target``: what ``ap.explain`` takes to name the explained output (``reference=``, ``task=``,
    ``target=``, ...); ``reference=`` may also be a list with one reference text per text, to train one
    attributor across references (the texts are explained in groups, one per distinct reference). ``validation``: the share of texts held out (at least :data:`MIN_VALIDATION`).
    ``hidden``: hidden units of the head (0: linear). ``max_exact``: texts with at most this many maskable
    tokens get exact values, longer ones seeded stratified-design estimates. ``shapley``: the values themselves,
    one array over each text's tokens, when already known (not computed then). ``path``: also save it there.
    """
    started = time.perf_counter()
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise InputError("fit_attributor trains on plain texts (a list of strings)")
    if not 0 < validation < 1:
        raise InputError(f"validation must be a share between 0 and 1, got {validation!r}")
    for name, value, least in (
        ("hidden", hidden, 0),
        ("max_exact", max_exact, 1),
        ("epochs", epochs, 1),
        ("patience", patience, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise InputError(f"{name} must be an integer of at least {least}, got {value!r}")
    n_val = max(MIN_VALIDATION, round(validation * len(texts)))
    if len(texts) - n_val < MIN_VALIDATION:
        need = next(
            n for n in range(MIN_TEXTS, 10**6) if n - max(MIN_VALIDATION, round(validation * n)) >= MIN_VALIDATION
        )
        raise InputError(
            f"fit_attributor needs at least {need} texts ({MIN_VALIDATION} held out for validation and "
            f"{MIN_VALIDATION} to train on); got {len(texts)}"
        )
    if shapley is not None and len(shapley) != len(texts):
        raise InputError(f"{len(shapley)} Shapley arrays for {len(texts)} texts")
    groups = _per_text_groups(texts, target)
    # Features: the explainer resolves each text's target and positions and captures as it does when
    # explaining, so the head sees at fit time exactly what it will see at use; one explainer per
    # reference (a reference's embedding is computed once, as ap.explain does for a batch).
    collector = LearnedAttributor(Head(1), {})
    collector._sink = {}
    specs: list[Any] = [None] * len(texts)
    feats: list[Any] = [None] * len(texts)
    for group_target, members in groups:
        explainer = AttentionExplainer(model, tokenizer, method=collector, special_tokens=True, **group_target)
        hf, tok = explainer.model, explainer.tokenizer
        group_specs = [explainer.resolve(texts[i], f"text {i + 1}") for i in members]
        if any(spec.kind not in collector.kinds for spec in group_specs):
            # An encoder-decoder's output reads the source through cross attention.
            raise InputError(
                f"fit_attributor: the learned attributor's features are {' and '.join(collector.kinds)} attention "
                f"rows, and this target is read through {group_specs[0].kind} attention (an encoder-decoder's "
                "generated tokens); explain it with cplrp_mask, or a method plugin whose features cover it"
            )
        scored = explainer.scores_batch(group_specs)  # in the order of specs (batches are formed by length)
        if any(np.ndim(v) != 1 for v, _ in scored):
            raise InputError("fit_attributor explains one output per text; this target has several")
        for i, spec, (_, record) in zip(members, group_specs, scored):
            specs[i], feats[i] = spec, collector._sink.pop(id(record))
    masker = _masker(tok)
    targets, players, evaluations, kinds = [], [], 0, set()
    for i, (spec, x) in enumerate(zip(specs, feats)):
        if spec.fn is None or spec.text is None:
            raise InputError(f"task {spec.task!r} cannot be masked as text; fit_attributor needs one that can")
        idx, n = maskable_positions(masker, spec.text)
        if n != x.shape[0]:
            raise InputError(f"text {i + 1}: the masker cut {n} tokens but the capture has {x.shape[0]}")
        if shapley is not None:
            phi = np.asarray(shapley[i], dtype=np.float64).reshape(-1)
            if phi.shape != (n,):
                raise InputError(f"text {i + 1}: {phi.size} Shapley values for its {n} tokens")
            kinds.add("given")
        elif len(idx) <= max_exact:
            phi = exact_shapley(spec.fn, masker, spec.text)
            evaluations += 2 ** len(idx)
            kinds.add("exact")
        else:
            phi, used = estimate_shapley(
                spec.fn, masker, spec.text, None, SAMPLES_PER_TOKEN * len(idx), seed=seed + i, sampling="stratified"
            )
            evaluations += used
            kinds.add("stratified-design estimates")
        targets.append(_normalized(phi, idx))
        players.append(idx)
    target_seconds = time.perf_counter() - started

    val, train = _split(texts, n_val, seed)
    head = _train(feats, targets, players, train, val, hidden, epochs, patience, lr, weight_decay, seed)
    with torch.no_grad():
        preds = [head(feats[i]).numpy() for i in val]
    vt, vp = [targets[i] for i in val], [players[i] for i in val]
    # The features alone, on the same held-out texts: what the head must beat.
    n_lh = (feats[0].shape[1] - 2) // 2
    baselines = {
        "cplrp_mask": _mean_spearman([feats[i][:, n_lh].numpy() for i in val], vt, vp),
        "attention (mean of heads and layers)": _mean_spearman(
            [feats[i][:, :n_lh].mean(1).numpy() for i in val], vt, vp
        ),
    }
    info = {
        "identity": model_identity(hf, tok),
        "target": {k: _recorded(v) for k, v in target.items()},
        "training": {
            "texts": len(train),
            "distinct_texts": len({texts[i] for i in train}),
            "texts_digest": texts_digest([texts[i] for i in train]),
            "all_texts_digest": texts_digest(texts),
            "targets": " and ".join(sorted(kinds)) + " Shapley values",
            "model_evaluations": int(evaluations),
            "seconds": round(time.perf_counter() - started, 3),
            "target_seconds": round(target_seconds, 3),
            "hidden": hidden,
            "seed": seed,
        },
        "validation": {
            "texts": len(val),
            "spearman": _mean_spearman(preds, vt, vp),
            "baselines": baselines,
        },
    }
    fitted = LearnedAttributor(head, info)
    if path is not None:
        fitted.save(path)
    return fitted


def _train(
    feats: list[torch.Tensor],
    targets: list[np.ndarray],
    players: list[np.ndarray],
    train: np.ndarray,
    val: np.ndarray,
    hidden: int,
    epochs: int,
    patience: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> Head:
    """The head with the best held-out mean Spearman, trained full-batch on the maskable tokens of ``train``."""
    x = torch.cat([feats[i][torch.as_tensor(players[i])] for i in train])
    y = torch.cat([torch.as_tensor(targets[i][players[i]]) for i in train])
    torch.manual_seed(seed)  # the head's initial weights
    head = Head(x.shape[1], hidden)
    head.mean.copy_(x.mean(0))
    head.std.copy_(x.std(0).clamp_min(1e-6))  # a constant feature (the special flag on players) stays 0
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    vx = [feats[i] for i in val]
    vt, vp = [targets[i] for i in val], [players[i] for i in val]
    # The untrained head predicts the relevance itself: training keeps a correction only if it validates better.
    with torch.no_grad():
        best = _mean_spearman([head(v).numpy() for v in vx], vt, vp)
    best_state, waited = {k: v.clone() for k, v in head.state_dict().items()}, 0
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.mean((head(x) - y) ** 2)
        loss.backward()
        opt.step()
        with torch.no_grad():
            score = _mean_spearman([head(v).numpy() for v in vx], vt, vp)
        if score > best + 1e-6 or np.isnan(best):
            best, best_state, waited = score, {k: v.clone() for k, v in head.state_dict().items()}, 0
        else:
            waited += 1
            if waited >= patience:
                break
    head.load_state_dict(best_state)
    return head.eval()
