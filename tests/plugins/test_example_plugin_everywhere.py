"""The example plugin's ``max_attention`` (a plain ``__call__``, no Method subclass) works wherever a built-in does.

The target is MiniLM's similarity to a reference sentence: a pooled target, whose explained rows are every
query row weighted by its share of the similarity. A ``__call__`` method's answer there is the weighted sum
of its rows (:class:`attn_plugins.methods.Method`), checked against the record's attention by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers.models import minilm

import attn_plugins as ap
from attn_plugins.corpus import load_results, run_corpus
from attn_plugins.explain.targets import resolve

TEXTS = ["a good film", "the plot was boring"]
REFERENCE = "a great movie"
# The plugin computes in float32; its rows are weighted in float64: float32 rounding of values <= 1.
ATOL = 1e-6


@pytest.fixture(scope="module")
def setup():
    return minilm()


def by_hand(model, tok, text: str) -> np.ndarray:
    """max_attention's scores for the similarity target, computed here: Σ_i w_i · max over layers of row i.

    ``head_reduce`` is the contract's default ("mean"), which the package passes to every method.
    """
    rec = ap.capture(model, tok, text)
    rows = rec.attentions["self"].double().mean(1).amax(0).numpy()  # heads averaged, strongest layer: [Q, K]
    weights = resolve(model, tok, text, reference=REFERENCE).row_weights()
    assert len(weights) == rows.shape[0] and np.ptp(weights) > 0  # a real weighting, not a plain mean
    return weights @ rows


def test_explain_reads_the_pooled_rows_as_their_weighted_sum(setup):
    model, tok = setup
    expl = ap.explain(model, tok, TEXTS, method="max_attention", reference=REFERENCE)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(expl.values[i], by_hand(model, tok, text)[1:-1], atol=ATOL)  # [CLS]/[SEP] out
    # the same through ap.attribute with the row weights as position
    rec = ap.capture(model, tok, TEXTS[0])
    weights = resolve(model, tok, TEXTS[0], reference=REFERENCE).row_weights()
    np.testing.assert_allclose(ap.attribute(rec, "max_attention", position=weights), by_hand(model, tok, TEXTS[0]))


def test_compare_ranks_the_plugin_beside_a_built_in(setup):
    model, tok = setup
    result = ap.compare(model, tok, TEXTS, methods=["max_attention", "rollout"], target=REFERENCE, reference="exact")
    rows = {r["method"]: r for r in result.methods}
    assert "error" not in rows["max_attention"], rows["max_attention"].get("error")
    assert np.isfinite(rows["max_attention"]["spearman"])
    for text, detail in zip(TEXTS, result.details):
        np.testing.assert_allclose(detail["methods"]["max_attention"], by_hand(model, tok, text), atol=ATOL)


def test_report_shows_the_plugin(setup):
    model, tok = setup
    page = ap.report(model, tok, TEXTS[0], methods=["max_attention", "rollout"], reference=REFERENCE, shap_evals=0)
    body = "".join(getattr(f, "body", "") for f in page.fragments)  # the page embeds them encoded
    row = re.search(r"<tr><th>max_attention</th>(.*?)</tr>", body)
    assert row, "the plugin's row is missing from the report"
    shown = [float(v) for v in re.findall(r'class="attn-tok"[^>]* title="([^"]+)"', row.group(1))]
    np.testing.assert_allclose(shown, by_hand(model, tok, TEXTS[0]), rtol=1e-3)  # titles carry 4 digits


def test_corpus_run_explains_with_the_plugin(setup, tmp_path: Path):
    model, tok = setup
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)), "utf-8")
    summary = run_corpus(model, tok, src, tmp_path / "out", method="max_attention", reference=REFERENCE, progress=False)
    assert summary["explained"] == len(TEXTS) and summary["failed"] == 0
    rows = {r["id"]: r for r in load_results(tmp_path / "out")}
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(rows[f"t{i}"]["scores"], by_hand(model, tok, text), atol=ATOL)


def test_get_method_is_public_and_captures_what_the_method_reads(setup):
    """README's ``get_method("alti").capture(...)``: the lookup is a public name of the package."""
    from attn_plugins.methods import GuardedMethod, Method

    assert "get_method" in ap.__all__ and "get_method" in dir(ap)
    alti = ap.get_method("alti")
    assert isinstance(alti, Method) and alti.name == "alti"
    model, tok = setup
    rec = alti.capture(model, tok, TEXTS[0])
    assert "alti" in rec.extras  # its own second, hooked forward ran
    np.testing.assert_array_equal(alti(rec), ap.attribute(rec, "alti"))
    plugin = ap.get_method("max_attention")
    assert isinstance(plugin, GuardedMethod) and "attn-example-plugin" in plugin.blame
