"""Shapley values by sampling: a balanced design, or a cheap method's scores as a control variate.

:func:`stratified_estimate` needs no cheap method: it evaluates a balanced cyclic design in the middle
coalition sizes (and its complements) before Shapley-kernel samples, and fits one intercept per coalition
size, which makes it exact once every coalition is evaluated (and on additive games from p + 1
evaluations). On the sampling benchmark it is the most accurate estimator at every budget.

A cheap method's scores ``c`` define an additive surrogate game ``g(S) = f(∅) + Σ_{i∈S} c_i`` whose
Shapley values are exactly ``c``. :func:`coalition_estimate` samples ``r = f - g`` and adds ``c`` back:
φ̂ = c + φ̂(r). It is unbiased for any ``c`` (φ is linear and φ(g) = c exactly); its variance is that of
the residual, so the closer ``f`` is to additive in ``c``, the smaller (an additive ``f`` with ``c`` its
own values has none). It samples coalitions, not permutations: along a permutation an additive game's
marginal contributions are ``c`` every time, so subtracting it changes nothing there (plain permutation
sampling, :func:`permutation_estimate`, is already exact on additive games); a coalition's value enters
an estimate whole, so there the surrogate takes most of it away. Each coalition is sampled with its
complement (paired sampling), and every evaluation informs every player.

``scale="efficiency"`` rescales ``c`` so that it sums to ``f(N) - f(∅)``: a deterministic function of two
values evaluated anyway, so the estimate stays unbiased while scores on another scale (relevance,
gradients) become a usable surrogate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import shap

from ..errors import InputError
from .maskers import maskable_positions

SCALES = ("efficiency", "none")
SAMPLINGS = ("stratified", "regression", "coalition", "permutation")
# How many coalitions the prior weighs as in regression_estimate (chosen on 24 dev texts of the faithful benchmark).
PRIOR_WEIGHT = 3.0
# Candidate base sets stratified_estimate's design chooses among (all of them when there are fewer).
BASE_CANDIDATES = 2000


@dataclass
class Estimate:
    """Shapley estimates [p] of the players, with the model evaluations and permutations they took."""

    values: np.ndarray
    evaluations: int
    permutations: int


def permutations_for(budget: int, p: int) -> int:
    """How many permutations a budget of model evaluations pays for (the empty and full coalition shared)."""
    if p < 1:
        raise InputError("a Shapley estimate needs at least one player")
    if budget < 2:
        raise InputError(f"a budget of {budget} evaluations cannot pay for the empty and the full coalition (2)")
    return 0 if p == 1 else (budget - 2) // (p - 1)


def surrogate(c: np.ndarray, total: float, scale: str) -> np.ndarray:
    """The control variate's values: ``c`` as given, or rescaled to sum to ``total`` (the game's f(N) - f(∅))."""
    if scale not in SCALES:
        raise InputError(f"scale must be one of {', '.join(SCALES)}, not {scale!r}")
    c = np.asarray(c, dtype=np.float64)
    if scale == "none" or not c.any():  # no scores: no surrogate, plain sampling
        return c
    s = c.sum()
    # A sum near zero relative to the scores' size makes the ratio meaningless: spread the gap evenly instead.
    if abs(s) <= 1e-6 * max(np.abs(c).sum(), 1e-300):
        return c + (total - s) / len(c)
    return c * (total / s)


def sample_permutations(p: int, m: int, rng: np.random.Generator, antithetic: bool = True) -> np.ndarray:
    """``m`` permutations [m, p] of the players; with ``antithetic`` every second one reverses the one before."""
    if not antithetic:
        return rng.permuted(np.tile(np.arange(p), (m, 1)), axis=1)
    drawn = rng.permuted(np.tile(np.arange(p), ((m + 1) // 2, 1)), axis=1)
    return np.stack([drawn, drawn[:, ::-1]], axis=1).reshape(-1, p)[:m]


def _coalition_game(game: Callable[[np.ndarray], np.ndarray], masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Values [k] of the coalition masks [k, p], each distinct coalition evaluated once; and how many were."""
    p = masks.shape[1]
    if p > 62:
        raise InputError(f"{p} players are too many for one estimate (at most 62)")
    keys = masks.astype(np.int64) @ (1 << np.arange(p, dtype=np.int64))
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    values = np.asarray(game(masks[first]), dtype=np.float64).reshape(-1)
    if values.shape != (len(unique),):
        raise InputError(f"the game returned {values.size} values for {len(unique)} coalitions")
    return values[inverse.reshape(-1)], len(unique)


def _checked_scores(c: np.ndarray | None, p: int) -> np.ndarray:
    c = np.zeros(p) if c is None else np.asarray(c, dtype=np.float64).reshape(-1)
    if c.shape != (p,):
        raise InputError(f"the control variate has {c.size} scores for {p} players")
    if not np.all(np.isfinite(c)):
        raise InputError("the control variate's scores must be finite")
    return c


def permutation_estimate(
    game: Callable[[np.ndarray], np.ndarray], p: int, budget: int, seed: int = 0, antithetic: bool = True
) -> Estimate:
    """Plain permutation sampling: the mean marginal contribution of each player over sampled permutations.

    An additive control variate cancels here (its marginal contributions are ``c`` along every permutation),
    so this estimator takes none; :func:`coalition_estimate` is where one helps.
    """
    m = permutations_for(budget, p)
    perms = sample_permutations(p, m, np.random.default_rng(seed), antithetic)
    # Coalitions along each permutation: prefix k keeps its first k players, k = 0 .. p.
    prefix = np.zeros((m, p + 1, p), dtype=bool)
    rows = np.arange(m)
    for k in range(1, p + 1):  # one vectorized step per position, over all permutations
        prefix[:, k] = prefix[:, k - 1]
        prefix[rows, k, perms[:, k - 1]] = True
    ends = np.stack([np.zeros(p, dtype=bool), np.ones(p, dtype=bool)])
    v, evaluations = _coalition_game(game, np.concatenate([ends, prefix.reshape(-1, p)]))
    if m == 0:  # nothing sampled: the efficient uniform split is all two values say
        return Estimate(np.full(p, (v[1] - v[0]) / p), evaluations, 0)
    contrib = np.zeros((m, p))
    contrib[rows[:, None], perms] = np.diff(v[2:].reshape(m, p + 1), axis=1)  # perms[j, k] joins at step k
    return Estimate(contrib.mean(0), evaluations, m)


def coalition_estimate(
    game: Callable[[np.ndarray], np.ndarray],
    p: int,
    c: np.ndarray | None,
    budget: int,
    seed: int = 0,
    scale: str = "efficiency",
) -> Estimate:
    """Control-variate estimate of the Shapley values of ``game`` from paired coalition samples.

    ``game`` maps coalition masks [k, p] (bool, True = kept) to values [k]; it is called once, on every
    distinct coalition sampled (at most ``budget``, the empty and full coalition included). ``c``: the
    cheap method's scores [p] (None: zeros, plain coalition sampling).

    Coalitions S are drawn with size s uniform in 1 .. p-1 and uniform within their size, each with its
    complement. With r = f - g (g(S) = f(∅) + Σ_{i∈S} c_i), φ_i(r) = (r(N) - r(∅))/p + E[(p-1) r(S)
    (1[i∈S]/s - 1[i∉S]/(p-s))]: the Shapley weights over the sampling probabilities, so every
    evaluation informs every player and the mean over samples is unbiased.
    """
    c = _checked_scores(c, p)
    if budget < 2:
        raise InputError(f"a budget of {budget} evaluations cannot pay for the empty and the full coalition (2)")
    pairs = (budget - 2) // 2 if p > 1 else 0
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, p, size=pairs) if pairs else np.zeros(0, dtype=np.int64)
    # A uniform subset of each size: the players with the s smallest of p uniform keys.
    ranks = np.argsort(np.argsort(rng.random((pairs, p)), axis=1), axis=1)
    inside = ranks < sizes[:, None]
    ends = np.stack([np.zeros(p, dtype=bool), np.ones(p, dtype=bool)])
    v, evaluations = _coalition_game(game, np.concatenate([ends, inside, ~inside]))
    empty, full = v[0], v[1]
    cv = surrogate(c, full - empty, scale)
    # r = f - g on the sampled coalitions (r(∅) = 0 by construction of g)
    r_in = v[2 : 2 + pairs] - empty - inside @ cv
    r_out = v[2 + pairs :] - empty - (~inside) @ cv
    base = cv + (full - empty - cv.sum()) / p
    if pairs == 0:
        return Estimate(base, evaluations, 0)
    s = sizes[:, None].astype(np.float64)
    # the pair's two samples, S (size s) and its complement (size p - s), averaged
    term_in = r_in[:, None] * np.where(inside, 1 / s, -1 / (p - s))
    term_out = r_out[:, None] * np.where(inside, -1 / s, 1 / (p - s))
    return Estimate(base + (p - 1) * ((term_in + term_out) / 2).mean(0), evaluations, pairs)


def kernel_pairs(p: int, pairs: int, rng: np.random.Generator) -> np.ndarray:
    """Coalition masks [pairs, p] with sizes drawn from the Shapley kernel (∝ 1/(s(p-s))), uniform within a size."""
    sizes = np.arange(1, p)
    weight = 1.0 / (sizes * (p - sizes))
    drawn = rng.choice(sizes, size=pairs, p=weight / weight.sum())
    ranks = np.argsort(np.argsort(rng.random((pairs, p)), axis=1), axis=1)
    return ranks < drawn[:, None]


def regression_estimate(
    game: Callable[[np.ndarray], np.ndarray],
    p: int,
    c: np.ndarray | None,
    budget: int,
    seed: int = 0,
    prior_weight: float = PRIOR_WEIGHT,
) -> Estimate:
    """Shapley values by paired KernelSHAP regression, pulled toward the cheap method's scores.

    Coalitions are drawn from the Shapley kernel, each with its complement; φ minimizes
    Σ_S (f(S) - f(∅) - Σ_{i∈S} φ_i)² + λ ||φ - prior||² subject to Σ φ = f(N) - f(∅). The prior is
    ``c`` fitted to the sampled values: f(N) - f(∅) spread evenly plus β (c - mean c), β by least squares.
    The penalty weighs as ``prior_weight`` (λ) coalitions, fixed while the samples grow, so the estimate
    tends to KernelSHAP's, which tends to the exact values; unlike :func:`coalition_estimate` it is biased
    at a finite budget (toward the prior), in exchange for a smaller error at small ones.
    """
    c = _checked_scores(c, p)
    if budget < 2:
        raise InputError(f"a budget of {budget} evaluations cannot pay for the empty and the full coalition (2)")
    if not prior_weight > 0:
        raise InputError(f"prior_weight must be positive, not {prior_weight}")
    pairs = (budget - 2) // 2 if p > 1 else 0
    inside = kernel_pairs(p, pairs, np.random.default_rng(seed)) if pairs else np.zeros((0, p), dtype=bool)
    ends = np.stack([np.zeros(p, dtype=bool), np.ones(p, dtype=bool)])
    masks = np.concatenate([inside, ~inside])
    v, evaluations = _coalition_game(game, np.concatenate([ends, masks]))
    empty, total = v[0], v[1] - v[0]
    y = v[2:] - empty
    x = masks.astype(np.float64)
    centred = c - c.mean()
    # β: how the sampled values follow the cheap scores, beyond the even split
    along, rest = x @ centred, y - x.sum(1) * total / p
    beta = float(along @ rest / (along @ along)) if along @ along > 0 else 0.0
    prior = total / p + beta * centred
    # KKT system of the equality-constrained ridge problem
    kkt = np.zeros((p + 1, p + 1))
    kkt[:p, :p] = 2 * (x.T @ x + prior_weight * np.eye(p))
    kkt[:p, p] = kkt[p, :p] = 1.0
    rhs = np.concatenate([2 * (x.T @ y + prior_weight * prior), [total]])
    return Estimate(np.linalg.solve(kkt, rhs)[:p], evaluations, pairs)


def balanced_base(p: int, k: int) -> np.ndarray:
    """A base set of ``k`` of the ``p`` players whose cyclic shifts make a well-conditioned design.

    The p shifts {D + j mod p} give a circulant design; its main effects are estimable with variances
    ∝ 1/|DFT(1_D)(ω)|² at the frequencies ω ≠ 0, so the set minimizing their sum is kept (A-optimal among
    candidates; a perfect difference set, such as the Fano plane's lines for p = 7, makes them all equal).
    Deterministic in ``p``: the same players' design every time.
    """
    rng = np.random.default_rng(p)
    if math.comb(p, k) <= BASE_CANDIDATES:
        sets = np.array(list(itertools.combinations(range(p), k)))
    else:
        sets = np.sort(np.argsort(rng.random((BASE_CANDIDATES, p)), axis=1)[:, :k], axis=1)
    indicator = np.zeros((len(sets), p))
    np.put_along_axis(indicator, sets, 1.0, axis=1)
    power = np.abs(np.fft.fft(indicator, axis=1)[:, 1:]) ** 2
    # a zero at some frequency leaves a contrast of the players unestimable
    cost = np.where(power.min(1) > 1e-9, (1 / np.maximum(power, 1e-300)).sum(1), np.inf)
    return sets[int(np.argmin(cost))]


def design_coalitions(p: int, budget: int, seed: int = 0) -> np.ndarray:
    """The coalitions [k, p] :func:`stratified_estimate` evaluates besides the empty and full one, in order.

    First the p cyclic shifts of :func:`balanced_base` (size ⌊p/2⌋ + 1) and their complements (a balanced design
    in the middle sizes, where the marginal contributions are most typical), then pairs drawn from the
    Shapley kernel (size ∝ 1/(s(p-s)), uniform within a size) with their complements, without repeats.
    """
    total = 2**p - 2 if p < 63 else np.inf
    want = int(min(budget, total))
    base = balanced_base(p, min(p // 2 + 1, p - 1))
    shifts = (base[None, :] + np.arange(p)[:, None]) % p
    rng = np.random.default_rng(seed)
    orbit = np.zeros((p, p), dtype=bool)
    # the players in a random order: which design a player gets is drawn, not tied to its position
    np.put_along_axis(orbit, rng.permutation(p)[shifts], True, axis=1)
    rows = [*orbit, *~orbit]
    if want > len(rows):
        sizes = np.arange(1, p)
        weight = 1.0 / (sizes * (p - sizes))
        if total <= 4 * want:  # few coalitions: a weighted order of all of them (Efraimidis–Spirakis keys)
            every = (np.arange(1, 2**p - 1)[:, None] >> np.arange(p)) & 1
            w = weight[every.sum(1) - 1] / np.array([math.comb(p, s) for s in every.sum(1)])
            order = np.argsort(-np.log(rng.random(len(every))) / w)
            drawn = every[order].astype(bool)
        else:  # many: draws from the kernel, repeats skipped below (rare)
            drawn = kernel_pairs(p, 2 * want, rng)
        rows += [m for pair in zip(drawn, ~drawn) for m in pair]
    out = np.array(rows, dtype=bool)
    keys = out.astype(np.int64) @ (1 << np.arange(p, dtype=np.int64))
    _, first = np.unique(keys, return_index=True)
    return out[np.sort(first)][:want]


def stratified_estimate(game: Callable[[np.ndarray], np.ndarray], p: int, budget: int, seed: int = 0) -> Estimate:
    """Shapley values from a balanced design and a regression with one intercept per coalition size.

    ``game`` maps coalition masks [k, p] to values [k]; it is called once, on at most ``budget`` distinct
    coalitions. Model: v(S) = α_|S| + Σ_{i∈S} φ_i, weighted least squares with weight 1/(n_s s (p-s)) on
    each of the n_s coalitions of size s, so every size sampled counts alike, as in the Shapley value.
    With every coalition evaluated the fit gives φ_i = (v(N) - v(∅))/p + (1/p) Σ_s (mean v over size-s
    coalitions with i - mean over those without), which is the Shapley value: exact in the limit. Below
    that it is biased (toward the middle sizes the design starts with) and nearly exact on games with
    few interactions; it needs no cheap method.

    A budget of 2p + 2 or more pays for the empty and full coalitions: the values then sum to
    v(N) - v(∅) (efficiency). Below that they are spent on the design instead (better rankings on the
    sampling benchmark), with one intercept for all sizes, so the values sum to the fitted model's
    estimate of v(N) - v(∅).
    """
    if p < 1:
        raise InputError("a Shapley estimate needs at least one player")
    if budget < 2:
        raise InputError(f"a budget of {budget} evaluations cannot pay for the empty and the full coalition (2)")
    ends = np.stack([np.zeros(p, dtype=bool), np.ones(p, dtype=bool)])
    efficient = p == 1 or budget >= min(2 * p + 2, 2**p)
    masks = design_coalitions(p, budget - 2 if efficient else budget, seed) if p > 1 else np.zeros((0, p), bool)
    v, evaluations = _coalition_game(game, np.concatenate([ends, masks]) if efficient else masks)
    if efficient:
        (empty, full), v = v[:2], v[2:]
        if len(masks) == 0:
            return Estimate(np.full(p, (full - empty) / p), evaluations, 0)
    size = masks.sum(1)
    counts = np.bincount(size, minlength=p + 1)
    sw = np.sqrt(1.0 / (counts[size] * size * (p - size)))
    # intercepts: one per size when the ends fix the level (exact in the limit), else one for all
    strata = np.unique(size) if efficient else np.zeros(1, dtype=np.int64)
    intercepts = (size[:, None] == strata[None]) if efficient else np.ones((len(masks), 1), dtype=bool)
    design = np.concatenate([intercepts, masks], axis=1).astype(np.float64)
    coef = np.linalg.lstsq(design * sw[:, None], v * sw, rcond=None)[0]
    phi = coef[len(strata) :]
    if efficient:  # per-size intercepts leave the values' common shift free: efficiency fixes it
        phi = phi - phi.mean() + (full - empty) / p
    return Estimate(phi, evaluations, len(masks))


def estimate_shapley(
    fn: Callable[[Sequence[str]], np.ndarray],
    masker: shap.maskers.Text,
    text: str,
    scores: np.ndarray | None,
    budget: int,
    seed: int = 0,
    sampling: str = "regression",
    scale: str = "efficiency",
) -> tuple[np.ndarray, int]:
    """(Shapley estimates [N] over the tokens of ``text``, model evaluations used): ``fn`` on masked strings.

    ``scores``: a cheap method's scores over the same N tokens, the control variate (None: none).
    ``sampling``: ``"stratified"`` (:func:`stratified_estimate`, which takes no scores), ``"regression"``
    (:func:`regression_estimate`), ``"coalition"`` (:func:`coalition_estimate`) or ``"permutation"``
    (:func:`permutation_estimate`, which takes no scores). Masking is ``masker``'s (shap's ``Text`` masker:
    the mask token written in place of each masked token); tokens it never masks get 0.
    """
    if sampling not in SAMPLINGS:
        raise InputError(f"sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}")
    players, n = maskable_positions(masker, text)
    p = len(players)
    if p == 0:
        raise InputError("the text has no maskable tokens to explain")
    c = None
    if scores is not None:
        if sampling == "permutation":
            raise InputError("permutation sampling takes no control variate (an additive one cancels there)")
        if sampling == "stratified":
            raise InputError("stratified sampling takes no control variate (its design needs no cheap method)")
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape != (n,):
            raise InputError(f"the control variate has {scores.size} scores for the text's {n} tokens")
        c = scores[players]

    def game(masks: np.ndarray) -> np.ndarray:
        full = np.ones((len(masks), n), dtype=bool)
        full[:, players] = masks
        return np.asarray(fn([masker(row, text)[0][0] for row in full]), dtype=np.float64).reshape(-1)

    if sampling == "permutation":
        est = permutation_estimate(game, p, budget, seed)
    elif sampling == "stratified":
        est = stratified_estimate(game, p, budget, seed)
    elif sampling == "regression":
        est = regression_estimate(game, p, c, budget, seed)
    else:
        est = coalition_estimate(game, p, c, budget, seed, scale)
    out = np.zeros(n)
    out[players] = est.values
    return out, est.evaluations
