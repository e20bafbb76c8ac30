"""Records, record files and texts for the bad-input tests: valid ones to break, and header surgery on files."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

import attn_plugins as ap


def small_record(
    n: int = 4, layers: int = 2, heads: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32, **fields: Any
) -> ap.AttentionRecord:
    """A valid single-stack record over ``n`` tokens ([CLS] w1 … [SEP]) with random softmax rows."""
    g = torch.Generator().manual_seed(seed)
    att = torch.softmax(3 * torch.randn(layers, heads, n, n, generator=g), -1).to(dtype)
    tokens = ["[CLS]", *[f"w{i}" for i in range(1, n - 1)], "[SEP]"]
    base: dict[str, Any] = dict(
        tokens=tokens,
        attentions={"self": att},
        special_tokens_mask=[True] + [False] * (n - 2) + [True],
        word_ids=[None, *range(n - 2), None],
    )
    base.update(fields)
    return ap.AttentionRecord(**base)


def header_parts(data: bytes) -> tuple[dict, dict, bytes]:
    """(safetensors header, the record's own JSON header, tensor bytes) of a saved record file."""
    (n,) = struct.unpack("<Q", data[:8])
    st = json.loads(data[8 : 8 + n])
    meta = st["__metadata__"]
    (key,) = list(meta)  # the record's header is the file's one metadata entry
    return st, json.loads(meta[key]), data[8 + n :]


def with_header(data: bytes, edit: Callable[[dict], Any] | None = None, raw_text: str | None = None) -> bytes:
    """The record file ``data`` with its JSON header edited in place (``edit`` may return a replacement)."""
    st, header, body = header_parts(data)
    key = next(iter(st["__metadata__"]))
    if raw_text is None:
        replaced = edit(header) if edit is not None else None
        header = header if replaced is None else replaced
        raw_text = json.dumps(header)
    st["__metadata__"][key] = raw_text
    blob = json.dumps(st).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + body


def texts_of_lengths(lengths: Iterable[int]) -> list[str]:
    """Texts of the tiny vocabulary with the given numbers of words (one token per word)."""
    words = "the movie was great and the book was very good but the film".split()
    return [" ".join(words[i % len(words)] for i in range(n)) for n in lengths]


def leftovers(*dirs: Path) -> list[str]:
    """Temporary files (``*.tmp-*``) left in ``dirs`` (recursively)."""
    found = []
    for d in dirs:
        if d.is_dir():
            found += [str(p) for p in d.rglob("*") if ".tmp-" in p.name or p.name.endswith(".tmp")]
    return found


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory no file can be created in: a read-only one, or /sys when running as root."""
    if os.geteuid() == 0:
        return Path("/sys")  # sysfs refuses new files even to root
    d = tmp_path / "read-only"
    d.mkdir(exist_ok=True)
    d.chmod(0o500)
    return d
