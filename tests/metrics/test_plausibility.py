"""Plausibility and agreement metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from attn_plugins.errors import InputError
from attn_plugins.metrics import auprc, iou_f1, kendall, spans, spearman, token_f1, top_k_overlap
from attn_plugins.metrics import faithfulness as faith
from attn_plugins.plugins import get_component

SCORES = [0.9, 0.8, 0.1, 0.7, 0.2, 0.05]
RATIONALE = [1, 1, 0, 0, 1, 0]


def test_token_f1_by_hand() -> None:
    # top-3 = positions 0, 1, 3; truth = 0, 1, 4: precision = recall = 2/3
    assert token_f1(SCORES, RATIONALE) == pytest.approx(2 / 3)
    # k = 2: positions 0, 1 both right: precision 1, recall 2/3, F1 = 0.8
    assert token_f1(SCORES, RATIONALE, k=2) == pytest.approx(0.8)
    # a boolean prediction is used as is
    assert token_f1(np.array([1, 0, 0, 0, 1, 1], dtype=bool), RATIONALE) == pytest.approx(2 / 3)


def test_iou_f1_by_hand() -> None:
    assert spans(np.array([1, 1, 0, 1, 0, 0], dtype=bool)) == [(0, 2), (3, 4)]
    # predicted spans [0,2) (IOU 1 with [0,2)) and [3,4) (IOU 0): P = 1/2, R = 1/2
    assert iou_f1(SCORES, RATIONALE) == pytest.approx(0.5)
    # predicted [0,3) against true [0,2): IOU 2/3 matches at 0.5 but not at 0.7
    scores = [0.9, 0.8, 0.7, 0.1, 0.0, 0.0]
    truth = [1, 1, 0, 0, 0, 0]
    assert iou_f1(scores, truth, k=3) == pytest.approx(1.0)
    assert iou_f1(scores, truth, k=3, threshold=0.7) == 0.0


def test_iou_f1_protected_token_separates_spans() -> None:
    # position 2 is protected: the prediction {1, 3} is two spans, not one
    scores = [0.0, 0.9, 5.0, 0.8, 0.0]
    truth = [0, 1, 0, 1, 0]
    assert iou_f1(scores, truth, protected=[False, False, True, False, False]) == pytest.approx(1.0)


def test_auprc_by_hand() -> None:
    # ranked: + + - + - -  -> AP = (1/1 + 2/2 + 3/4) / 3
    assert auprc(SCORES, RATIONALE) == pytest.approx(2.75 / 3)
    assert auprc(SCORES + [100.0], RATIONALE + [0], protected=[False] * 6 + [True]) == pytest.approx(2.75 / 3)


def test_plausibility_bad_input() -> None:
    with pytest.raises(InputError, match="rationale is empty"):
        token_f1(SCORES, [0] * 6)
    with pytest.raises(InputError, match="rationale has 3 entries for 6 tokens"):
        iou_f1(SCORES, [1, 0, 0])
    with pytest.raises(InputError, match="NaN"):
        auprc([np.nan] + SCORES[1:], RATIONALE)
    with pytest.raises(InputError, match="undefined without negatives"):
        auprc(SCORES, [1] * 6)
    with pytest.raises(InputError, match="0/1 values"):
        token_f1(SCORES, [2, 0, 0, 0, 0, 0])
    with pytest.raises(InputError, match="threshold"):
        iou_f1(SCORES, RATIONALE, threshold=0)


def test_agreement_by_hand() -> None:
    a, b = [1, 2, 3, 4], [1, 3, 2, 4]
    assert spearman(a, b) == pytest.approx(0.8)  # 1 - 6·2 / (4·15)
    assert kendall(a, b) == pytest.approx(2 / 3)  # 5 concordant, 1 discordant of 6 pairs
    assert top_k_overlap(a, b, 2) == pytest.approx(0.5)  # {3, 2} vs {3, 1}
    assert spearman(a, b, protected=[True, False, False, False]) == pytest.approx(0.5)


def test_agreement_bad_input() -> None:
    with pytest.raises(InputError, match="a has 3 entries but b has 4"):
        spearman([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(InputError, match="constant"):
        kendall([1, 1, 1], [1, 2, 3])
    with pytest.raises(InputError, match="k must be between 1 and 3"):
        top_k_overlap([1, 2, 3], [3, 2, 1], 4)
    with pytest.raises(InputError, match="NaN"):
        spearman([1, np.inf, 3], [1, 2, 3])


def test_metrics_are_registered_plugins_with_one_call_shape_per_kind() -> None:
    assert get_component("metric", "comprehensiveness").function is faith.comprehensiveness
    assert get_component("metric", "aopc_sufficiency").function is faith.aopc_sufficiency
    assert get_component("metric", "deletion").function is faith.deletion_curve
    assert get_component("metric", "token_f1").function is token_f1
    assert get_component("metric", "top_k_overlap").function is top_k_overlap
    kinds = {name: get_component("metric", name).kind for name in ("deletion", "token_f1", "kendall")}
    assert kinds == {"deletion": "faithfulness", "token_f1": "plausibility", "kendall": "agreement"}
    # agreement: metric(scores, reference) -> float; plausibility: metric(scores, rationale) -> float
    assert get_component("metric", "top_k_overlap")([4, 3, 2, 1], [4, 1, 3, 2], k=2) == pytest.approx(0.5)
    assert get_component("metric", "token_f1")([0.9, 0.1, 0.8], [1, 0, 0], k=1) == pytest.approx(1.0)

    # faithfulness: metric(predict, token_ids, scores, target, baseline_id=...) -> float, even for curves
    # (a result object's value): erasing token 7 first leaves probability 0.25 from then on.
    def predict(ids):
        p = np.where((ids == 7).any(1), 0.75, 0.25)
        return np.stack([1 - p, p], 1)

    deletion = get_component("metric", "deletion")
    area = deletion(predict, [5, 7, 6], [0.1, 0.9, 0.2], 1, baseline_id=0)
    assert isinstance(area, float)
    assert area == pytest.approx(faith.deletion_curve(predict, [5, 7, 6], [0.1, 0.9, 0.2], 1, baseline_id=0).area)
    assert deletion.higher_is_better is False
