"""Summarization end to end: generate with the KV cache on, then explain every generated token.

Each generated token is explained with the most faithful method that supports the model (the default of
``ap.explain``), over the source tokens and the summary's tokens before it, once as its log-probability
and once contrastively: log p(token) − log p(a contrast token) at every step ("this rather than that").

Runs offline on a tiny random-init BART (its "summary" is arbitrary; the pipeline is real). With a real
model from the hub, pass ``--hub``:

    python examples/summarization.py --hub sshleifer/distilbart-cnn-6-6

which loads it with::

    model = AutoModelForSeq2SeqLM.from_pretrained(name).eval()
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
from attn_plugins.metrics.diagnostics import diagnose
from attn_plugins.zoo import peaked_, tiny_tokenizer, tiny_vocab

TEXT = (
    "the old man went to the city by car and saw a big house . "
    "the house was new and the man said it was a good place to work"
)


def load(hub: str | None, seed: int = 0) -> tuple[Any, Any]:
    """A real summarizer from the hub when named, else a tiny random-init BART."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, BartConfig, BartForConditionalGeneration

    if hub:
        return AutoModelForSeq2SeqLM.from_pretrained(hub).eval(), AutoTokenizer.from_pretrained(hub)
    tokenizer = tiny_tokenizer("seq2seq")
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=len(tiny_vocab("seq2seq")),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
        forced_eos_token_id=None,
    )
    # Random-init attention is nearly uniform; sharpening it makes the per-token picture readable.
    return peaked_(BartForConditionalGeneration(config)).eval(), tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example; write the HTML pages to ``--out`` and return (and print) a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", help="a summarization model name on the Hugging Face hub")
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--contrast-token", default="the", help="the token each generated token is compared with")
    parser.add_argument("--out", default=None, help="folder for the HTML pages (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="attn-summarization-"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    model, tokenizer = load(args.hub)

    # 1. Generate and capture in one pass: cross-attention rows are the start token and each new token.
    record = ap.capture_generate(model, tokenizer, TEXT, max_new_tokens=args.max_new_tokens, min_new_tokens=2)
    generated = record.target_tokens[1:]

    # 2. Per generated token: the source tokens its cross attention (last layer, mean of heads) weighs most.
    rows = np.asarray(ap.attribute(record, "raw", position="generated", kind="cross"))
    per_token = {}
    for i, row in enumerate(rows):
        top = np.argsort(-row)[:3]
        per_token[f"{i}:{generated[i]}"] = [record.tokens[j] for j in top]

    # 3. Each generated token explained with the default (most faithful) method as shap's text-to-text
    # Explanation, rendered by shap.plots.text; then the same tokens against a contrast token.
    explanation = ap.explain(model, tokenizer, TEXT, max_new_tokens=args.max_new_tokens)
    (out / "summarization_shap_text.html").write_text(shap.plots.text(explanation, display=False))
    contrast = ap.explain(
        model, tokenizer, TEXT, max_new_tokens=args.max_new_tokens, contrast_token=args.contrast_token
    )
    info = contrast.generation[0]
    words = [str(w).strip() for w in contrast.data[0]]
    values = np.asarray(contrast.values[0])
    contrasted = {
        f"{i}:{a} rather than {b}": [words[j] for j in np.argsort(-values[:, i])[:3]]
        for i, (a, b) in enumerate(zip(info["generated_tokens"], info["contrast_tokens"]))
    }

    # 4. Views and diagnostics of the generation record.
    ap.views.heatmap(record, kind="cross", layers=-1).save(out / "summarization_cross_heatmap.html")
    summary = {
        "generated": generated,
        "top_source_tokens_per_generated_token": per_token,
        "explanation_values_shape": list(np.asarray(explanation.values[0]).shape),
        "explanation_output_names": [str(t) for t in np.asarray(explanation.output_names).ravel()],
        "method": explanation.method,
        "top_words_per_contrast": contrasted,
        "stopped_early": info["stopped_early"],
        "cross_warnings": diagnose(record, kind="cross").warnings,
        "pages": sorted(p.name for p in out.glob("*.html")),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
