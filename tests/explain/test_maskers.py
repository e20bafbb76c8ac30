"""AttentionMasker: a shap Text masker whose Partition hierarchy comes from the captured attention."""

from __future__ import annotations

import numpy as np
import pytest
import shap
from scipy.cluster.hierarchy import is_valid_linkage

from attn_plugins.errors import InputError
from attn_plugins.explain.maskers import (
    AttentionMasker,
    contiguous_linkage,
    embed_tree,
    exact_shapley,
    free_linkage,
    maskable_positions,
)
from attn_plugins.zoo import tiny_bert, tiny_tokenizer


def leaves(tree: np.ndarray, node: int, n: int) -> list[int]:
    """The leaves under a node of a linkage matrix."""
    if node < n:
        return [node]
    left, right = tree[node - n, :2].astype(int)
    return leaves(tree, left, n) + leaves(tree, right, n)


def test_contiguous_linkage_by_hand():
    s = np.array(
        [
            [1.0, 0.9, 0.1, 0.0],
            [0.9, 1.0, 0.1, 0.0],
            [0.1, 0.1, 1.0, 0.5],
            [0.0, 0.0, 0.5, 1.0],
        ]
    )
    # (0,1) at .9 first -> node 4; then cluster 4 vs 2 has mean .1 and 2 vs 3 has .5 -> (2,3) = node 5; root
    tree = contiguous_linkage(s)
    np.testing.assert_array_equal(tree[:, [0, 1, 3]], [[0, 1, 2], [2, 3, 2], [4, 5, 4]])
    # 0 and 2 attend to each other most, but they are not adjacent: the contiguous tree never joins them first
    s2 = np.eye(3) + np.array([[0, 0.2, 0.9], [0.2, 0, 0.1], [0.9, 0.1, 0]])
    assert contiguous_linkage(s2)[0, :2].tolist() == [0, 1]
    assert sorted(free_linkage(s2)[0, :2].tolist()) == [0, 2]


def test_embed_tree_puts_special_tokens_at_the_top():
    players = np.array([1, 2, 3])
    tree = contiguous_linkage(np.array([[1.0, 0.2, 0.1], [0.2, 1.0, 0.8], [0.1, 0.8, 1.0]]))
    full = embed_tree(tree, players, 5)
    assert is_valid_linkage(full)
    assert full.shape == (4, 4)
    # players 2 and 3 (local 1 and 2) merge first, then 1, then the specials 0 and 4 join one by one
    assert sorted(leaves(full, 5, 5)) == [2, 3]
    assert sorted(leaves(full, 6, 5)) == [1, 2, 3]
    assert full[2, 1] == 0 and full[3, 1] == 4
    np.testing.assert_allclose(full[:, 2], full[:, 3] / 5)


@pytest.fixture(scope="module")
def setting():
    tok = tiny_tokenizer("bert")
    weights = {"good": 2.0, "bad": 1.0, "film": -0.5}

    # shap's masker glues "[MASK]" to the next word ("[MASK]bad film"), so read words as the model would
    def additive(texts):
        return np.array([sum(w for word, w in weights.items() if word in tok.tokenize(t)) for t in texts])

    def interaction(texts):
        return np.array([float({"good", "film"} <= set(tok.tokenize(t))) for t in texts])

    return tok, additive, interaction


def test_exact_shapley_by_hand(setting):
    tok, additive, interaction = setting
    masker = shap.maskers.Text(tok)
    text = "good bad film"
    players, n = maskable_positions(masker, text)
    assert players.tolist() == [1, 2, 3] and n == 5  # [CLS] and [SEP] are never masked
    np.testing.assert_allclose(exact_shapley(additive, masker, text), [0, 2.0, 1.0, -0.5, 0], atol=1e-12)
    # a pure interaction of two players splits its unit value equally between them
    np.testing.assert_allclose(exact_shapley(interaction, masker, text), [0, 0.5, 0, 0.5, 0], atol=1e-12)


def test_partition_with_the_attention_masker(setting):
    tok, additive, interaction = setting
    model = tiny_bert()
    masker = AttentionMasker(model, tok)
    text = "good bad film"
    tree = masker.clustering(text)
    assert is_valid_linkage(tree) and tree.shape == (4, 4)
    assert masker.captures == 1
    # every cluster of the maskable tokens is a contiguous span
    for node in range(5, 5 + 2):
        span = sorted(leaves(tree, node, 5))
        assert span == list(range(span[0], span[-1] + 1))
    expl = shap.Explainer(additive, masker, algorithm="partition")([text], max_evals=100, silent=True)
    # Owen values of an additive game equal its Shapley values on any hierarchy
    np.testing.assert_allclose(expl.values[0], [0, 2.0, 1.0, -0.5, 0], atol=1e-9)
    assert list(expl.data[0]) == ["", "good ", "bad ", "film", ""]
    assert "<div" in shap.plots.text(expl, display=False)
    free = AttentionMasker(model, tok, contiguous=False, affinity="rollout")
    got = shap.Explainer(interaction, free, algorithm="partition")([text], max_evals=100, silent=True).values[0]
    np.testing.assert_allclose(got.sum(), 1.0, atol=1e-9)  # efficiency: values sum to f(x) - f(all masked)


def test_attention_masker_errors(setting):
    tok, _, _ = setting
    masker = AttentionMasker(tiny_bert(), tok)
    with pytest.raises(InputError, match="no maskable tokens"):
        masker.clustering("   ")
    with pytest.raises(InputError, match="no maskable tokens"):
        masker.clustering("[SEP]")
    with pytest.raises(InputError, match="2\\^15"):
        exact_shapley(lambda t: np.zeros(len(t)), shap.maskers.Text(tok), " ".join(["good"] * 15))
