"""Faithfulness metrics on a hand-computed case: an additive 'model' whose probabilities we can write down."""

from __future__ import annotations

import numpy as np
import pytest

from attn_plugins.errors import InputError
from attn_plugins.metrics import (
    aopc,
    aopc_comprehensiveness,
    aopc_sufficiency,
    comprehensiveness,
    deletion_curve,
    insertion_curve,
    sufficiency,
)

IDS = [101, 5, 6, 9, 5, 102]
PROTECTED = [True, False, False, False, False, True]
# Free tokens ranked: position 1 (0.9), 4 (0.7), 2 (0.5), 3 (0.1); the specials are never erased.
SCORES = [9.0, 0.9, 0.5, 0.1, 0.7, 9.0]


class Additive:
    """p(class 1) = 0.1 + 0.2·#(id 5) + 0.1·#(id 6); records the batch sizes it was called with."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        self.calls.append(len(ids))
        p1 = 0.1 + 0.2 * (ids == 5).sum(1) + 0.1 * (ids == 6).sum(1)
        return np.stack([1 - p1, p1], axis=1)


def test_comprehensiveness_and_sufficiency_by_hand() -> None:
    # full p = 0.6; erasing positions 1 and 4 leaves 0.2; keeping only them gives 0.5.
    comp = comprehensiveness(Additive(), IDS, SCORES, 1, baseline_id=0, k=2, protected=PROTECTED)
    suff = sufficiency(Additive(), IDS, SCORES, 1, baseline_id=0, k=2, protected=PROTECTED)
    assert comp == pytest.approx(0.4)
    assert suff == pytest.approx(0.1)
    # fraction 0.5 of 4 free tokens is the same k = 2
    assert comprehensiveness(Additive(), IDS, SCORES, 1, baseline_id=0, fraction=0.5, protected=PROTECTED) == (
        pytest.approx(0.4)
    )


def test_aopc_by_hand_in_one_batched_call() -> None:
    model = Additive()
    out = aopc(model, IDS, SCORES, 1, baseline_id=0, protected=PROTECTED)
    # 4 free tokens: bins 1, 5, 10, 20 % erase ceil(...) = 1 token, 50 % erases 2.
    comp, suff = out["comprehensiveness"], out["sufficiency"]
    assert comp.points == pytest.approx((0.2, 0.2, 0.2, 0.2, 0.4))
    assert comp.value == pytest.approx(0.24)
    assert suff.points == pytest.approx((0.3, 0.3, 0.3, 0.3, 0.1))
    assert suff.value == pytest.approx(0.26)
    assert comp.full_probability == pytest.approx(0.6)
    assert model.calls == [11]  # full input + 5 erased + 5 kept, all in one forward pass
    assert aopc_comprehensiveness(Additive(), IDS, SCORES, 1, baseline_id=0, protected=PROTECTED).value == (
        pytest.approx(0.24)
    )
    assert aopc_sufficiency(Additive(), IDS, SCORES, 1, baseline_id=0, protected=PROTECTED).value == (
        pytest.approx(0.26)
    )


def test_aopc_batch_size_chunks_the_calls() -> None:
    model = Additive()
    out = aopc(model, IDS, SCORES, 1, baseline_id=0, protected=PROTECTED, batch_size=4)
    assert model.calls == [4, 4, 3]
    assert out["comprehensiveness"].value == pytest.approx(0.24)


def test_deletion_and_insertion_curves_by_hand() -> None:
    dele = deletion_curve(Additive(), IDS, SCORES, 1, baseline_id=0, protected=PROTECTED)
    np.testing.assert_allclose(dele.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(dele.probabilities, [0.6, 0.4, 0.2, 0.1, 0.1])
    assert dele.area == pytest.approx(0.2625)  # trapezoids: 0.25·(0.5 + 0.3 + 0.15 + 0.1)
    ins = insertion_curve(Additive(), IDS, SCORES, 1, baseline_id=0, protected=PROTECTED)
    np.testing.assert_allclose(ins.probabilities, [0.1, 0.3, 0.5, 0.6, 0.6])
    assert ins.area == pytest.approx(0.4375)
    assert ins.to_dict()["area"] == pytest.approx(0.4375)


def test_curve_max_steps_subsamples() -> None:
    curve = deletion_curve(Additive(), IDS, SCORES, 1, baseline_id=0, protected=PROTECTED, max_steps=2)
    np.testing.assert_allclose(curve.fractions, [0, 0.5, 1])
    np.testing.assert_allclose(curve.probabilities, [0.6, 0.2, 0.1])


def test_a_better_ranking_scores_better() -> None:
    reversed_scores = [0, 0.1, 0.5, 0.9, 0.2, 0]
    good = comprehensiveness(Additive(), IDS, SCORES, 1, baseline_id=0, k=1, protected=PROTECTED)
    bad = comprehensiveness(Additive(), IDS, reversed_scores, 1, baseline_id=0, k=1, protected=PROTECTED)
    assert good > bad


def test_ties_resolve_left_to_right() -> None:
    # all free scores equal: position 1 (id 5) is erased first
    flat = [0, 1, 1, 1, 1, 0]
    assert comprehensiveness(Additive(), IDS, flat, 1, baseline_id=0, k=1, protected=PROTECTED) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": [1.0, 2.0]}, "token_ids has 6 entries but scores has 2"),
        ({"scores": [0, np.nan, 1, 1, 1, 0]}, "NaN"),
        ({"target": 2}, "target class 2 is out of range for 2 classes"),
        ({"target": "pos"}, "target must be a class index"),
        ({"protected": [True] * 6}, "every token is protected"),
        ({"protected": [True] * 5}, "protected has 5 entries for 6 tokens"),
        ({"token_ids": [1.5] * 6}, "token_ids must be integers"),
        ({"k": 5}, "k must be between 1 and the 4 erasable tokens"),
        ({"k": None}, "exactly one of fraction= or k="),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict, message: str) -> None:
    args = {"token_ids": IDS, "scores": SCORES, "target": 1, "k": 2, "protected": PROTECTED}
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        comprehensiveness(
            Additive(),
            args["token_ids"],
            args["scores"],
            args["target"],
            baseline_id=0,
            k=args["k"],
            protected=args["protected"],
        )


def test_bad_bins_and_bad_predict() -> None:
    with pytest.raises(InputError, match="bins are fractions"):
        aopc(Additive(), IDS, SCORES, 1, baseline_id=0, bins=(0.1, 1.5))
    with pytest.raises(InputError, match="bins is empty"):
        aopc(Additive(), IDS, SCORES, 1, baseline_id=0, bins=())
    with pytest.raises(InputError, match=r"predict must return \[batch, classes\]"):
        aopc(lambda ids: np.ones(len(ids)), IDS, SCORES, 1, baseline_id=0)
    with pytest.raises(InputError, match="predict returned NaN"):
        aopc(lambda ids: np.full((len(ids), 2), np.nan), IDS, SCORES, 1, baseline_id=0)
