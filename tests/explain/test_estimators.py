"""The sampling Shapley estimators against games whose Shapley values are known by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from attn_plugins.errors import InputError
from attn_plugins.explain.estimators import (
    coalition_estimate,
    permutation_estimate,
    permutations_for,
    regression_estimate,
    sample_permutations,
    stratified_estimate,
    surrogate,
)
from attn_plugins.explain.maskers import shapley_values

P = 6
A = np.array([0.5, -1.0, 2.0, 0.25, 0.0, 1.5])  # additive part
B, D = 3.0, -1.2  # pairwise interaction of players 0 and 1; a three-way one of 2, 3 and 4


def interacting(masks: np.ndarray) -> np.ndarray:
    """v(S) = 0.7 + Σ_{i∈S} a_i + B·[0,1 ∈ S] + D·[2,3,4 ∈ S]."""
    m = np.asarray(masks, dtype=bool)
    return 0.7 + m @ A + B * (m[:, 0] & m[:, 1]) + D * (m[:, 2] & m[:, 3] & m[:, 4])


# By hand: an interaction among k players gives each of them 1/k of it; the constant goes to no one.
EXACT = A + np.array([B / 2, B / 2, D / 3, D / 3, D / 3, 0.0])


def additive(masks: np.ndarray) -> np.ndarray:
    return 0.7 + np.asarray(masks, dtype=bool) @ A


def test_hand_values_are_the_exact_shapley_values():
    all_masks = ((np.arange(2**P)[:, None] >> np.arange(P)) & 1).astype(bool)
    np.testing.assert_allclose(shapley_values(interacting(all_masks), np.arange(P), P), EXACT, atol=1e-12)


def expected_coalition_estimate(game, c: np.ndarray) -> np.ndarray:
    """E[φ̂] of coalition_estimate computed exactly: every coalition weighted by its sampling probability."""
    p = len(c)
    empty, full = game(np.zeros((1, p), bool))[0], game(np.ones((1, p), bool))[0]
    cv = surrogate(c, full - empty, "efficiency")
    out = cv + (full - empty - cv.sum()) / p
    for s in range(1, p):
        prob = 1 / ((p - 1) * math.comb(p, s))
        for subset in itertools.combinations(range(p), s):
            m = np.zeros(p, bool)
            m[list(subset)] = True
            r = game(m[None])[0] - empty - m @ cv
            out = out + prob * (p - 1) * r * np.where(m, 1 / s, -1 / (p - s))
    return out


@pytest.mark.parametrize("c", [np.zeros(P), A, np.array([3.0, 0.0, -2.0, 1.0, 1.0, 0.5])])
def test_coalition_estimate_is_unbiased_for_any_control_variate(c):
    # The expectation over the sampling distribution, summed exactly, is the exact Shapley value.
    np.testing.assert_allclose(expected_coalition_estimate(interacting, c), EXACT, atol=1e-12)


def test_additive_game_with_its_own_values_has_no_variance():
    for seed in range(5):
        est = coalition_estimate(additive, P, A, budget=6, seed=seed)
        np.testing.assert_allclose(est.values, A, atol=1e-12)
    # scaled control variates too: efficiency rescales 2·A back to A
    np.testing.assert_allclose(coalition_estimate(additive, P, 2 * A, budget=6, seed=1).values, A, atol=1e-12)
    # without the control variate the same budget misses
    assert np.abs(coalition_estimate(additive, P, None, budget=6, seed=1).values - A).max() > 0.1


def rmse(estimator, budget: int, seeds: int = 300) -> float:
    errors = [estimator(budget, seed).values - EXACT for seed in range(seeds)]
    return float(np.sqrt(np.mean(np.square(errors))))


def test_coalition_estimate_converges_at_one_over_sqrt_budget():
    c = A + 0.3  # a rough surrogate: the additive part, shifted
    errors = {b: rmse(lambda b, s: coalition_estimate(interacting, P, c, b, s), b) for b in (12, 48, 192)}
    # budget x4 -> error /2 (pairs = (budget - 2) / 2: 5, 23, 95); 300 seeds leave about 10 % noise
    assert 1.6 < errors[12] / errors[48] < 2.8
    assert 1.6 < errors[48] / errors[192] < 2.8
    # and the mean over seeds sits on the exact values
    mean = np.mean([coalition_estimate(interacting, P, c, 48, s).values for s in range(300)], axis=0)
    assert np.abs(mean - EXACT).max() < 4 * errors[48] / np.sqrt(300)


def test_a_good_control_variate_reduces_the_error():
    # a cheap method near the Shapley values (off by up to 0.3) takes most of the game away
    near = EXACT + np.array([0.3, -0.2, 0.1, 0.0, -0.3, 0.2])
    with_cv = rmse(lambda b, s: coalition_estimate(interacting, P, near, b, s), 20)
    without = rmse(lambda b, s: coalition_estimate(interacting, P, None, b, s), 20)
    assert with_cv < without / 3


def test_zero_control_variate_is_plain_coalition_sampling():
    # Plain estimator written out: φ_i = (f(N) - f(∅))/p + mean over pairs of the Shapley-weighted values.
    budget, seed = 14, 3
    rng = np.random.default_rng(seed)
    pairs = (budget - 2) // 2
    sizes = rng.integers(1, P, size=pairs)
    ranks = np.argsort(np.argsort(rng.random((pairs, P)), axis=1), axis=1)
    empty, full = interacting(np.zeros((1, P), bool))[0], interacting(np.ones((1, P), bool))[0]
    total = np.full(P, (full - empty) / P)
    for s, rank in zip(sizes, ranks):
        inside = rank < s
        for m, size in ((inside, s), (~inside, P - s)):
            value = interacting(m[None])[0] - empty
            total += (P - 1) * value * np.where(m, 1 / size, -1 / (P - size)) / (2 * pairs)
    for scale in ("efficiency", "none"):
        est = coalition_estimate(interacting, P, np.zeros(P), budget, seed, scale=scale)
        np.testing.assert_allclose(est.values, total, atol=1e-12)
    np.testing.assert_allclose(coalition_estimate(interacting, P, None, budget, seed).values, total, atol=1e-12)


def test_permutation_estimate_is_the_mean_marginal_contribution():
    budget, seed = 2 + 4 * (P - 1), 5
    perms = sample_permutations(P, 4, np.random.default_rng(seed))
    assert (perms[1] == perms[0][::-1]).all() and (perms[3] == perms[2][::-1]).all()
    expected = np.zeros(P)
    for perm in perms:
        m = np.zeros(P, bool)
        for player in perm:
            before = interacting(m[None])[0]
            m[player] = True
            expected[player] += (interacting(m[None])[0] - before) / len(perms)
    est = permutation_estimate(interacting, P, budget, seed)
    assert est.permutations == 4
    np.testing.assert_allclose(est.values, expected, atol=1e-12)
    # exact on an additive game whatever the sample
    np.testing.assert_allclose(permutation_estimate(additive, P, budget, seed).values, A, atol=1e-12)


def test_budget_bounds_the_evaluations():
    calls = []

    def counted(masks):
        calls.append(len(masks))
        return interacting(masks)

    for budget in (2, 7, 20, 64):
        calls.clear()
        est = coalition_estimate(counted, P, A, budget, 0)
        assert sum(calls) == est.evaluations <= budget
        calls.clear()
        est = permutation_estimate(counted, P, budget, 0)
        assert sum(calls) == est.evaluations <= budget
    assert permutations_for(2 + 3 * (P - 1), P) == 3


def test_bad_input():
    with pytest.raises(InputError, match="3 scores for 6 players"):
        coalition_estimate(interacting, P, np.zeros(3), 10)
    with pytest.raises(InputError, match="finite"):
        coalition_estimate(interacting, P, np.full(P, np.nan), 10)
    with pytest.raises(InputError, match="budget of 1"):
        coalition_estimate(interacting, P, None, 1)
    with pytest.raises(InputError, match="budget of 1"):
        permutation_estimate(interacting, P, 1)
    with pytest.raises(InputError, match="scale"):
        coalition_estimate(interacting, P, A, 10, scale="ratio")
    with pytest.raises(InputError, match="returned 1 values"):
        coalition_estimate(lambda m: np.zeros(1), P, A, 10)


def test_regression_with_the_right_prior_is_exact_on_an_additive_game():
    for seed in range(3):
        np.testing.assert_allclose(regression_estimate(additive, P, A, 8, seed).values, A, atol=1e-10)
    # a prior on another scale is refitted (β), so it works as well
    np.testing.assert_allclose(regression_estimate(additive, P, 5 * A - 2, 8, 0).values, A, atol=1e-10)
    assert np.abs(regression_estimate(additive, P, None, 8, 0).values - A).max() > 0.1


def test_regression_converges_to_the_exact_values():
    c = A + 0.3
    errors = {b: rmse(lambda b, s: regression_estimate(interacting, P, c, b, s), b, 100) for b in (12, 48, 400)}
    assert errors[12] > 1.5 * errors[48] > 1.5 * 1.5 * errors[400]
    assert errors[400] < 0.1
    # efficiency holds exactly at every budget
    est = regression_estimate(interacting, P, c, 12, 0)
    assert est.values.sum() == pytest.approx(EXACT.sum(), abs=1e-10)


def test_regression_bad_input():
    with pytest.raises(InputError, match="prior_weight"):
        regression_estimate(interacting, P, A, 10, prior_weight=0.0)
    with pytest.raises(InputError, match="budget of 1"):
        regression_estimate(interacting, P, A, 1)


def test_regression_draws_sizes_from_the_shapley_kernel():
    from attn_plugins.explain.estimators import kernel_pairs

    sizes = kernel_pairs(P, 60000, np.random.default_rng(0)).sum(1)
    s = np.arange(1, P)
    kernel = 1 / (s * (P - s))
    share = np.bincount(sizes, minlength=P)[1:] / len(sizes)
    np.testing.assert_allclose(share, kernel / kernel.sum(), atol=0.01)  # 60000 draws: sd below 0.002
    # with many samples the regression reaches the exact values, not another weighting's (uniform sizes: 0.02)
    assert rmse(lambda b, s: regression_estimate(interacting, P, None, b, s), 20000, 20) < 0.01


# ---------------------------------------------------------------- stratified_estimate
def test_stratified_is_exact_once_every_coalition_is_evaluated():
    # 2^6 = 64 coalitions: the fit with one intercept per size is the Shapley value (EXACT, by hand)
    for seed in range(2):
        est = stratified_estimate(interacting, P, 64, seed)
        np.testing.assert_allclose(est.values, EXACT, atol=1e-10)
        assert est.evaluations == 64
    # a larger budget takes no more evaluations than there are coalitions
    assert stratified_estimate(interacting, P, 1000, 0).evaluations == 64


def test_stratified_is_exact_on_an_additive_game_from_p_plus_one_evaluations():
    for p in (5, 6, 7, 9, 12):
        a = np.linspace(-1.0, 2.0, p) ** 2 - 0.5

        def game(m: np.ndarray, a: np.ndarray = a) -> np.ndarray:
            return 0.3 + np.asarray(m, dtype=bool) @ a

        for budget in (p + 1, 2 * p + 2, 3 * p):
            np.testing.assert_allclose(stratified_estimate(game, p, budget, 1).values, a, atol=1e-10)


def test_stratified_converges_and_keeps_efficiency():
    errors = {b: rmse(lambda b, s: stratified_estimate(interacting, P, b, s), b, 30) for b in (8, 20, 40, 62)}
    assert errors[8] > errors[20] > errors[40] > errors[62]
    assert errors[62] < 0.05
    # from 2p + 2 evaluations on the empty and full coalitions are paid for: the values sum to v(N) - v(∅)
    est = stratified_estimate(interacting, P, 2 * P + 2, 0)
    assert est.values.sum() == pytest.approx(EXACT.sum(), abs=1e-10)
    assert est.evaluations == 2 * P + 2


def test_stratified_spends_at_most_its_budget():
    calls = []

    def counted(masks: np.ndarray) -> np.ndarray:
        calls.append(len(masks))
        return interacting(masks)

    for budget in (2, 7, 10, 13, 14, 30, 63):
        calls.clear()
        est = stratified_estimate(counted, P, budget, 0)
        assert sum(calls) == est.evaluations <= budget and np.all(np.isfinite(est.values))
    est = stratified_estimate(lambda m: 2.0 + 3.0 * np.asarray(m, dtype=bool)[:, 0], 1, 2)
    assert est.values == pytest.approx([3.0]) and est.evaluations == 2


def test_stratified_design_is_balanced():
    from attn_plugins.explain.estimators import balanced_base, design_coalitions

    # p = 7: the best base set is a perfect difference set (the Fano plane's lines' complements):
    # every pair of players meets equally often in the 7 shifts
    base = balanced_base(7, 4)
    diffs = np.bincount(((base[:, None] - base[None, :]) % 7).ravel(), minlength=7)
    assert len(set(diffs[1:])) == 1
    rows = design_coalitions(7, 14, 0)
    assert len({tuple(r) for r in rows}) == 14 and set(rows.sum(1)) == {3, 4}
    assert np.all(rows.sum(0) == 7)  # each player in half of the rows


def test_stratified_bad_input():
    with pytest.raises(InputError, match="budget of 1"):
        stratified_estimate(interacting, P, 1)
    with pytest.raises(InputError, match="at least one player"):
        stratified_estimate(interacting, 0, 10)
    with pytest.raises(InputError, match="returned 1 values"):
        stratified_estimate(lambda m: np.zeros(1), P, 10)


def test_stratified_absorbs_any_function_of_the_coalition_size():
    # v(S) = Σ a_i + g(|S|): a symmetric part gives every player (g(p) - g(0)) / p (by hand), whatever g;
    # one intercept per size fits it exactly from a partial design (one intercept for all sizes would not)
    g = np.array([0.0, 0.9, -0.4, 1.7, 0.2, -1.1, 0.6])

    def game(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=bool)
        return m @ A + g[m.sum(1)]

    for budget in (2 * P + 2, 24, 40):
        np.testing.assert_allclose(stratified_estimate(game, P, budget, 3).values, A + (g[P] - g[0]) / P, atol=1e-10)


def test_estimate_shapley_runs_the_stratified_estimator_on_text():
    from attn_plugins.bench.exact import text_masker
    from attn_plugins.explain.estimators import estimate_shapley
    from attn_plugins.explain.maskers import exact_shapley
    from attn_plugins.zoo import tiny_tokenizer

    masker = text_masker(tiny_tokenizer("bert"))
    text = "the movie was good fun"
    weights = {"movie": 1.0, "good": 2.0, "fun": -0.5}

    def fn(texts):  # additive in the words kept, and one interaction (movie with good)
        words = [t.split() for t in texts]
        return np.array([sum(weights.get(w, 0.1) for w in ws) + 0.7 * ("movie" in ws and "good" in ws) for ws in words])

    exact = exact_shapley(fn, masker, text)
    values, used = estimate_shapley(fn, masker, text, None, 32, sampling="stratified")
    np.testing.assert_allclose(values, exact, atol=1e-10)  # 5 words: 32 coalitions, every one evaluated
    assert used == 32
    with pytest.raises(InputError, match="no control variate"):
        estimate_shapley(fn, masker, text, np.zeros(len(exact)), 10, sampling="stratified")
