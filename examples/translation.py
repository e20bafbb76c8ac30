"""Machine translation end to end: cross-attention of an encoder-decoder, word alignment, per-token explanation.

Each token of the translation is explained with the most faithful method that supports the model (the
default of ``ap.explain``: relevance propagated through every layer), over the source words and the
target words before it, and contrastively: why the model writes the adjective it writes rather than
another one (``contrast=``, an alternative translation compared token by token).

Runs offline on a tiny BART trained here for a few seconds on the synthetic language pair of the
alignment benchmark (a word-by-word dictionary with adjective-noun swaps). So short a training run
translates poorly; when its output matches the reference, the per-layer AER against the gold alignment
is printed (``attn-plugins bench align`` trains long enough for that). With a real model from the hub, pass ``--hub``:

    python examples/translation.py --hub Helsinki-NLP/opus-mt-en-fr --text "the big cat sleeps"

which loads it with::

    model = AutoModelForSeq2SeqLM.from_pretrained(name).eval()
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
from attn_plugins.bench import align
from attn_plugins.metrics.diagnostics import diagnose


def load(hub: str | None, seed: int = 0) -> tuple[Any, Any]:
    """A real translation model from the hub when named, else a tiny BART trained on the synthetic pair."""
    if hub:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        return AutoModelForSeq2SeqLM.from_pretrained(hub).eval(), AutoTokenizer.from_pretrained(hub)
    config = align.Config(n_train=480, epochs=1)
    tokenizer = align.tiny_tokenizer("seq2seq")
    data = align.make_pairs(config.n_train, random.Random(seed), align.dictionary(seed), config.phrases)
    model = align.build_model(config, tokenizer, seed)
    align.train(model, tokenizer, data, config, seed)
    return model, tokenizer


def swap_adjective(pair: Any, seed: int = 0) -> str:
    """The pair's reference translation with its first adjective's translation replaced by another adjective's."""
    words = align.dictionary(seed)
    adjectives = [words[a] for a in ("big", "small", "new", "old", "long", "short", "good", "bad")]
    target = list(pair.target)
    at = next(i for i, w in enumerate(target) if w in adjectives)
    target[at] = next(a for a in adjectives if a != target[at])
    return " ".join(target)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example; write the HTML pages to ``--out`` and return (and print) a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", help="a translation model name on the Hugging Face hub")
    parser.add_argument("--text", help="the source sentence (default: a synthetic one with its gold alignment)")
    parser.add_argument(
        "--contrast", help="an alternative translation, as many tokens as the model's (default: one adjective swapped)"
    )
    parser.add_argument("--out", default=None, help="folder for the HTML pages (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="attn-translation-"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    model, tokenizer = load(args.hub)
    pair = None
    if args.text:
        source = args.text
    else:
        pair = align.translate(["the", "big", "dog", "with", "a", "small", "cat"], align.dictionary(0))
        source = " ".join(pair.source)

    # 1. Translate (greedy), then capture encoder, decoder and cross attention on the translation.
    enc = tokenizer(source, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**enc, max_new_tokens=len(enc["input_ids"][0]) + 4, do_sample=False)
    translation = tokenizer.decode(generated[0], skip_special_tokens=True)
    record = ap.capture(model, tokenizer, source, target=translation or source)
    summary: dict[str, Any] = {"source": source, "translation": translation, "kinds": record.kinds}

    # 2. Word alignment from cross attention: each target token to the source token it weighs most.
    if pair is not None:
        summary["reference"] = " ".join(pair.target)
        if translation.split() == pair.target:
            rows, cols = align.word_rows(pair)
            cross = record.attentions["cross"].numpy()[:, :, rows][:, :, :, cols]
            summary["aer_per_layer"] = {
                str(layer): round(align.aer(align.links_from_scores(cross[layer].mean(0)), pair.gold), 4)
                for layer in range(cross.shape[0])
            }
        else:
            summary["aer_per_layer"] = "the tiny model's translation differs from the reference; no gold alignment"

    # 3. Each generated token explained with the default (most faithful) method, in shap's text-to-text form:
    # relevance of the source words and of the target words before it, rendered by shap.plots.text.
    explanation = ap.explain(model, tokenizer, source, max_new_tokens=len(enc["input_ids"][0]) + 4)
    (out / "translation_shap_text.html").write_text(shap.plots.text(explanation, display=False))
    summary["method"] = explanation.method
    summary["explained_tokens"] = [str(t) for t in np.asarray(explanation.output_names).ravel()]

    # 4. "This rather than that": the reference translation (forced decoding) against the same sentence with
    # the first adjective's translation replaced by another adjective's; at that step the explained value is
    # log p(the adjective) − log p(the other) (0 at every other step); a model that translates well puts it on
    # the source adjective (this one, trained for a few seconds, often does not).
    if pair is not None or args.contrast:
        given = " ".join(pair.target) if pair is not None else translation
        other = args.contrast or swap_adjective(pair)
        contrast = ap.explain(model, tokenizer, source, target=given, contrast=other)
        info = contrast.generation[0]
        step = next(i for i, (a, b) in enumerate(zip(info["generated_ids"], info["contrast_ids"])) if a != b)
        values, words = np.asarray(contrast.values[0]), [str(w).strip() for w in contrast.data[0]]
        summary["contrast"] = {
            "explained": f"{info['generated_tokens'][step]!r} rather than {info['contrast_tokens'][step]!r}",
            "top_words": [words[j] for j in np.argsort(-values[:, step])[:3]],
        }

    # 5. Cross-attention heatmap of the last layer and diagnostics of the cross attention.
    last = record.layer_ids("cross")[-1]
    ap.views.heatmap(record, kind="cross", layers=last).save(out / "translation_cross_heatmap.html")
    summary["cross_warnings"] = diagnose(record, kind="cross").warnings
    summary["pages"] = sorted(p.name for p in out.glob("*.html"))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
