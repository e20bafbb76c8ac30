"""The prompt and the continuation of a generation: chat messages rendered with the tokenizer's own template,
the continuation generated (greedy) or given (forced decoding), and the contrast tokens aligned with it.

The explained outputs themselves (one log-probability per generated token) are built in
:mod:`~attn_plugins.explain.targets`; this module only turns what the user gave into token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError


@dataclass
class Prompt:
    """A prompt as the model reads it: its text, token ids, and which tokens are left out by default."""

    text: str  # the text the tokens come from (a chat prompt: rendered by the template)
    ids: torch.Tensor  # [T]
    special: list[bool]  # special tokens and, for a chat prompt, the template's own tokens
    chat: bool = False


def is_chat(example: Any) -> bool:
    """Whether ``example`` is a chat prompt: a list of ``{"role": ..., "content": ...}`` messages."""
    return isinstance(example, (list, tuple)) and bool(example) and all(isinstance(m, dict) for m in example)


def check_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """The messages, each a dict with a string ``role`` and a string ``content``, or InputError naming the bad one."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f'chat message {i + 1} must be a dict {{"role": str, "content": str}}, got {m!r}')
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["content"].strip() for m in out):
        raise InputError("the chat messages are empty: there is nothing to explain")
    return out


def chat_prompt(tokenizer: Any, messages: Sequence[Any]) -> Prompt:
    """``messages`` rendered with the tokenizer's chat template (with the generation prompt) and tokenized.

    The template adds role markers and separators around the messages' contents: those tokens are marked
    (``special``), found from the tokens' character offsets, so only the messages' own words are explained.
    """
    messages = check_messages(messages)
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError(
            f"the prompt is given as chat messages, but the tokenizer ({type(tokenizer).__name__}) has no chat "
            "template: pass the prompt as text, or set tokenizer.chat_template"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise InputError("a chat prompt needs a fast tokenizer (its character offsets find the messages' words)")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    spans = _content_spans(tokenizer, messages, text)
    # The template writes its own special tokens (a BOS) where it wants them.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = torch.tensor([s for s, _ in enc["offset_mapping"]])
    ends = torch.tensor([e for _, e in enc["offset_mapping"]])
    inside = torch.zeros(len(starts), dtype=torch.bool)
    for a, b in spans:
        inside |= (starts < b) & (ends > a) & (ends > starts)
    return Prompt(text=text, ids=torch.tensor(enc["input_ids"]), special=(~inside).tolist(), chat=True)


def _content_spans(tokenizer: Any, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Where each message's content lies in the rendered ``text``.

    The template is rendered once more with each content replaced by a marker no text holds: the pieces
    between the markers are the template's own, so a content that also occurs in a role marker or in an
    earlier message is still found at its own place.
    """
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
    marked = [{**m, "content": k} for m, k in zip(messages, marks)]
    skeleton = tokenizer.apply_chat_template(marked, add_generation_prompt=True, tokenize=False)
    spans, at, rebuilt = [], 0, []
    for m, k in zip(messages, marks):
        found = skeleton.find(k, at)
        if found < 0:
            raise InputError("the chat template does not write each message's content once, in order")
        rebuilt.append(skeleton[at:found])
        start = sum(len(p) for p in rebuilt)  # the template's pieces and the contents before this one
        spans.append((start, start + len(m["content"])))
        rebuilt.append(m["content"])
        at = found + len(k)
    rebuilt.append(skeleton[at:])
    if "".join(rebuilt) != text:
        raise InputError("the chat template changes the messages' contents (it must write them verbatim)")
    return spans


def text_prompt(tokenizer: Any, text: str) -> Prompt:
    """A plain text prompt, tokenized as the model reads it (with its special tokens, marked)."""
    enc = tokenizer(text, return_special_tokens_mask=True)
    return Prompt(text=text, ids=torch.tensor(enc["input_ids"]), special=[bool(s) for s in enc["special_tokens_mask"]])


def target_ids(tokenizer: Any, text: str, seq2seq: bool, what: str = "target") -> list[int]:
    """Token ids of a given continuation: an encoder-decoder's labels (its own special tokens, e.g. the
    closing EOS, included), a causal LM's tokens as they continue the prompt (no special tokens added)."""
    if not isinstance(text, str) or not text:
        raise InputError(f"the {what} continuation must be a non-empty string, got {text!r}")
    ids = (
        tokenizer(text_target=text)["input_ids"] if seq2seq else tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    if not ids:
        raise InputError(f"the {what} continuation {text!r} has no tokens")
    return [int(i) for i in ids]


def contrast_token_id(tokenizer: Any, token: Any, vocab: int) -> int:
    """The id of a contrast token: an id, or a string that tokenizes to exactly one token."""
    if isinstance(token, bool):
        raise InputError(f"contrast_token must be a token (a string or an id), got {token!r}")
    if isinstance(token, int):
        if not 0 <= token < vocab:
            raise InputError(f"contrast_token id {token} out of range for a vocabulary of {vocab}")
        return token
    if not isinstance(token, str) or not token:
        raise InputError(f"contrast_token must be a token (a string or an id), got {token!r}")
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"contrast_token {token!r} is {len(ids)} tokens, not one: pass contrast= for a continuation")
    return int(ids[0])


def contrast_ids(
    tokenizer: Any,
    explained: int,
    seq2seq: bool,
    vocab: int,
    contrast: str | None = None,
    contrast_token: Any = None,
) -> list[int] | None:
    """One contrast token per explained step (``contrast`` aligned token by token, or ``contrast_token`` at
    every step), or None without a contrast; a contrast of another length is an InputError naming both."""
    if contrast is not None and contrast_token is not None:
        raise InputError("pass contrast= (a continuation) or contrast_token= (one token), not both")
    if contrast_token is not None:
        return [contrast_token_id(tokenizer, contrast_token, vocab)] * explained
    if contrast is None:
        return None
    ids = target_ids(tokenizer, contrast, seq2seq, "contrast")
    if len(ids) != explained:
        raise InputError(
            f"the contrast {contrast!r} is {len(ids)} tokens but the explained continuation is {explained}: "
            "a contrast is compared token by token and needs as many"
        )
    return ids
