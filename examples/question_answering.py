"""Extractive question answering end to end: explain the start and end of the answer span, view, check.

Runs offline on a tiny random-init BERT with a QA head (its answers are arbitrary, the pipeline is
real). With a real model from the hub, pass ``--hub``:

    python examples/question_answering.py --hub distilbert-base-cased-distilled-squad

which loads it with::

    model = AutoModelForQuestionAnswering.from_pretrained(name).eval()
    tokenizer = AutoTokenizer.from_pretrained(name)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import shap
import torch

import attn_plugins as ap
from attn_plugins.metrics import aopc, deletion_curve
from attn_plugins.metrics.diagnostics import diagnose
from attn_plugins.zoo import tiny_tokenizer, tiny_vocab

QUESTION = "what is the capital of france"
CONTEXT = "paris is the capital of france and berlin is the capital of germany"


def load(hub: str | None, seed: int = 0) -> tuple[Any, Any]:
    """A real QA model from the hub when named, else a tiny random-init BERT QA model."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertConfig, BertForQuestionAnswering

    if hub:
        return AutoModelForQuestionAnswering.from_pretrained(hub).eval(), AutoTokenizer.from_pretrained(hub)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tiny_vocab("bert")),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    return BertForQuestionAnswering(config).eval(), tiny_tokenizer("bert")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example; write the HTML pages to ``--out`` and return (and print) a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", help="an extractive QA model name on the Hugging Face hub")
    parser.add_argument("--out", default=None, help="folder for the HTML pages (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="attn-qa-"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    model, tokenizer = load(args.hub)

    # 1. The predicted span, and the attention of the (question, context) pair.
    enc = tokenizer(QUESTION, CONTEXT, return_tensors="pt", return_special_tokens_mask=True)
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        outputs = model(**inputs)
    # As QA pipelines do, the answer lies in the context (sequence 1), and ends at or after its start.
    in_context = torch.tensor([sid == 1 for sid in enc.sequence_ids(0)])
    start_logits = outputs.start_logits[0].masked_fill(~in_context, float("-inf"))
    start = int(start_logits.argmax())
    end_logits = outputs.end_logits[0].masked_fill(~in_context, float("-inf"))
    end = start + int(end_logits[start:].argmax())
    answer = tokenizer.decode(enc["input_ids"][0, start : end + 1])
    record = ap.capture(model, tokenizer, inputs=inputs)

    # 2. shap-style explanation with two outputs, "start" and "end", rendered by shap's bar plot data.
    explanation = ap.explain(model, tokenizer, [(QUESTION, CONTEXT)])  # the most faithful method for this model
    (out / "qa_shap_text.html").write_text(shap.plots.text(explanation[0, :, "start"], display=False))

    # 3. Views and diagnostics.
    ap.views.model_view(record).save(out / "qa_model_view.html")
    diag = diagnose(record)

    # 4. Faithfulness of rollout for the start position: the "classes" are the positions of the input.
    ids = enc["input_ids"][0].numpy()
    protected = enc["special_tokens_mask"][0].numpy().astype(bool)
    # Segment ids (question 0, context 1) stay as they are; only the token ids are erased.
    extra = {k: v for k, v in inputs.items() if k == "token_type_ids"}

    def predict_start(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            rows = {k: v.expand(len(batch), -1) for k, v in extra.items()}
            logits = model(input_ids=torch.as_tensor(batch), **rows)
        return torch.softmax(logits.start_logits, -1).numpy()

    start_scores = ap.attribute(record, "rollout", position=start)
    erased = aopc(predict_start, ids, start_scores, start, baseline_id=tokenizer.mask_token_id, protected=protected)
    curve = deletion_curve(
        predict_start, ids, start_scores, start, baseline_id=tokenizer.mask_token_id, protected=protected
    )
    top = np.argsort(-np.where(protected, -np.inf, start_scores))[:3]
    summary = {
        "answer": answer,
        "span": [start, end],
        "output_names": list(explanation.output_names),
        "top_tokens_for_start": [record.tokens[i] for i in top],
        "aopc_comprehensiveness": round(erased["comprehensiveness"].value, 4),
        "aopc_sufficiency": round(erased["sufficiency"].value, 4),
        "deletion_area": round(curve.area, 4),
        "warnings": diag.warnings,
        "pages": sorted(p.name for p in out.glob("*.html")),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
