"""Records the view tests share: hand-made softmax records, hostile tokens, and tiny-model captures."""

from __future__ import annotations

import json
import re
import warnings
from functools import cache

import torch

import attn_plugins as ap
from attn_plugins import AttentionRecord
from attn_plugins.zoo import tiny_bert, tiny_tokenizer, tiny_vocab

XSS_TOKENS = [
    "</script><img src=x onerror=alert(1)>",
    '"><svg onload=alert(2)>',
    "<img src=x onerror=window.__pwned=1>",
    "'-->&lt;<!--",
    "$x^2$ and $",
]


def softmax_record(
    n: int = 6, layers: int = 2, heads: int = 3, d: int = 4, seed: int = 0, tokens: list[str] | None = None
) -> AttentionRecord:
    """A self-attention record with peaked random weights, query/key vectors and a special-token mask."""
    g = torch.Generator().manual_seed(seed)
    tokens = tokens or ["[CLS]", *[f"tok{i}" for i in range(n - 2)], "[SEP]"]
    n = len(tokens)
    att = torch.softmax(torch.randn(layers, heads, n, n, generator=g) * 3, -1)
    return AttentionRecord(
        tokens=tokens,
        attentions={"self": att},
        queries={"self": torch.randn(layers, heads, n, d, generator=g)},
        keys={"self": torch.randn(layers, heads, n, d, generator=g)},
        special_tokens_mask=[i in (0, n - 1) for i in range(n)],
    )


def xss_record(layers: int = 2, heads: int = 2) -> AttentionRecord:
    """A record whose tokens try to break out of every HTML context."""
    return softmax_record(tokens=["[CLS]", *XSS_TOKENS, "[SEP]"], layers=layers, heads=heads)


@cache  # views never modify a record, so the tests share one capture
def captured_encoder() -> AttentionRecord:
    """A tiny BERT classifier's record with query and key vectors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ap.capture(tiny_bert(num_labels=2), tiny_tokenizer("bert"), "a good film, really", qk=True)


@cache  # views never modify a record, so the tests share one capture
def captured_decoder() -> AttentionRecord:
    """A tiny GPT-2's (causal) record with query and key vectors."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tiny_vocab("gpt")), n_embd=32, n_layer=2, n_head=4, n_positions=64)
    model = GPT2LMHeadModel(config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ap.capture(model, tiny_tokenizer("gpt"), "the movie was very good", qk=True)


@cache  # views never modify a record, so the tests share one capture
def captured_seq2seq() -> AttentionRecord:
    """A tiny BART's record whose decoder has fewer layers (2) and heads (2) than its encoder (3, 4)."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=len(tiny_vocab("seq2seq")),
        d_model=32,
        encoder_layers=3,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ap.capture(model, tiny_tokenizer("seq2seq"), "the cat saw a dog", target="a dog")


def page_params(html: str) -> list[dict]:
    """The parameter blocks of a page, parsed, with payload references replaced by the payloads."""
    blocks = dict(re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', html, re.DOTALL))
    data = {ident: json.loads(text) for ident, text in blocks.items() if ident.startswith("attn-data-")}

    def resolve(obj: object) -> object:
        if isinstance(obj, dict):
            if "__attn_ref__" in obj:
                return data[obj["__attn_ref__"]]
            return {k: resolve(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [resolve(v) for v in obj]
        return obj

    return [resolve(json.loads(text)) for ident, text in blocks.items() if ident.startswith("attn-params")]
