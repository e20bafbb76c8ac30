"""Sentiment classification end to end: capture, attribute, explain with shap, view, diagnose, check faithfulness.

Runs offline on a tiny BERT trained here in a few seconds on the planted-trigger task (the label is
decided by words such as "good" or "terrible"). With a real model from the hub, pass ``--hub``:

    python examples/sentiment.py --hub distilbert-base-uncased-finetuned-sst-2-english

which loads it with::

    model = AutoModelForSequenceClassification.from_pretrained(name).eval()
    tokenizer = AutoTokenizer.from_pretrained(name)
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import shap
import torch

import attn_plugins as ap
from attn_plugins.bench import planted
from attn_plugins.metrics import aopc, auprc, token_f1
from attn_plugins.metrics.diagnostics import diagnose, disagreement

TEXTS = ["the movie was good and the music fun", "a terrible story about a dog in the city"]


def load(hub: str | None, seed: int = 0) -> tuple[Any, Any]:
    """A real classifier from the hub when named, else a tiny one trained on planted triggers."""
    if hub:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        return AutoModelForSequenceClassification.from_pretrained(hub).eval(), AutoTokenizer.from_pretrained(hub)
    config = planted.Config(n_train=600, epochs=2)
    tokenizer = planted.tiny_tokenizer("bert")
    model = planted.build_model(config, seed)
    planted.train(model, tokenizer, planted.make_examples(config.n_train, random.Random(seed)), config, seed)
    return model, tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example; write the HTML pages to ``--out`` and return (and print) a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", help="a sequence-classification model name on the Hugging Face hub")
    parser.add_argument("--out", default=None, help="folder for the HTML pages (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="attn-sentiment-"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    model, tokenizer = load(args.hub)

    # 1. Capture one text and score its tokens with three attention methods (the [CLS] row).
    record = ap.capture(model, tokenizer, TEXTS[0])
    scores = {m: ap.attribute(record, m, position="first") for m in ("raw", "rollout", "flow")}

    # 2. The same as a shap.Explanation, for a batch, rendered by shap's own text plot.
    explanation = ap.explain(model, tokenizer, TEXTS)  # the default: the most faithful method for this model
    (out / "sentiment_shap_text.html").write_text(shap.plots.text(explanation, display=False))

    # 3. bertviz head view of the capture, offline.
    ap.views.head_view(record).save(out / "sentiment_head_view.html")

    # 4. When attention misleads: diffuse and sink heads, and disagreement with a real attribution.
    diag = diagnose(record)
    enc = tokenizer(TEXTS[0], return_special_tokens_mask=True)
    ids = np.asarray(enc["input_ids"])
    protected = np.asarray(enc["special_tokens_mask"], dtype=bool)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(input_ids=torch.as_tensor(batch)).logits, -1).numpy()

    target = int(predict(ids[None]).argmax())
    masker = shap.maskers.Text(tokenizer, mask_token=tokenizer.mask_token, collapse_mask_token=False)
    shap_values = shap.explainers.Partition(planted.text_predictor(model, tokenizer), masker)(
        [TEXTS[0]], max_evals=200, silent=True
    ).values[0][:, target]
    flag = disagreement(scores["rollout"], shap_values, protected=protected, view_name="rollout", reference_name="SHAP")

    # 5. Faithfulness (ERASER AOPC, [MASK] as the erased token) and plausibility against the trigger words.
    rationale = np.array([t in ("good", "fun") for t in record.tokens])
    summary: dict[str, Any] = {"target": target, "diagnostics": diag.to_dict(), "disagreement": flag.to_dict()}
    for name, s in {**scores, "shap": shap_values}.items():
        erased = aopc(predict, ids, s, target, baseline_id=tokenizer.mask_token_id, protected=protected)
        summary[name] = {
            "aopc_comprehensiveness": round(erased["comprehensiveness"].value, 4),
            "aopc_sufficiency": round(erased["sufficiency"].value, 4),
            "token_f1": round(token_f1(s, rationale, protected=protected), 4),
            "auprc": round(auprc(s, rationale, protected=protected), 4),
        }
    summary["explanation_shape"] = [len(explanation), *np.asarray(explanation[0].values).shape]
    summary["pages"] = sorted(p.name for p in out.glob("*.html"))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
