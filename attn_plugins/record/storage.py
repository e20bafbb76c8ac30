"""Saving and loading AttentionRecords: safetensors for tensors, a JSON header for the rest, no pickle."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import RecordFormatError
from .kinds import TENSOR_FIELDS
from .record import SCHEMA_VERSION, AttentionRecord

_HEADER_KEY = "attn_plugins"
_TENSOR_GROUPS = ("attentions", *TENSOR_FIELDS, "outputs", "extras")
_PLAIN_FIELDS = (
    "tokens",
    "target_tokens",
    "word_ids",
    "target_word_ids",
    "offsets",
    "special_tokens_mask",
    "target_special_tokens_mask",
    "text",
    "target_text",
    "meta",
)


def to_bytes(record: AttentionRecord) -> bytes:
    """Serialize a record to the bytes of a safetensors file whose metadata holds the JSON header."""
    tensors: dict[str, torch.Tensor] = {}
    for group in _TENSOR_GROUPS:
        for key, t in getattr(record, group).items():
            if "/" in key:
                raise RecordFormatError(f"{group} key {key!r} may not contain '/'")
            tensors[f"{group}/{key}"] = t.detach().cpu().contiguous()
    header: dict[str, Any] = {name: getattr(record, name) for name in _PLAIN_FIELDS}
    header["meta"] = {**record.meta, "schema_version": SCHEMA_VERSION}
    try:
        text = json.dumps(header, default=_json_default)
    except TypeError as exc:
        raise RecordFormatError(f"record metadata is not JSON-serializable: {exc}") from exc
    return st_save(tensors, metadata={_HEADER_KEY: text})


def from_bytes(data: bytes, source: str = "<bytes>") -> AttentionRecord:
    """Parse bytes written by :func:`to_bytes`; never executes anything from the data."""
    header = _read_header(data, source)
    version = header.get("meta", {}).get("schema_version")
    if not isinstance(version, int):
        raise RecordFormatError(f"{source}: the header has no schema version")
    if version > SCHEMA_VERSION:
        raise RecordFormatError(
            f"{source}: written with schema version {version}, but this attn-plugins reads up to "
            f"version {SCHEMA_VERSION}; upgrade attn-plugins to load it"
        )
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise RecordFormatError(f"{source}: corrupted tensor data ({exc})") from exc
    groups: dict[str, dict[str, torch.Tensor]] = {g: {} for g in _TENSOR_GROUPS}
    for name, t in tensors.items():
        group, _, key = name.partition("/")
        if group not in groups or not key:
            raise RecordFormatError(f"{source}: unexpected tensor {name!r}")
        groups[group][key] = t
    plain = {name: header.get(name) for name in _PLAIN_FIELDS}
    if plain["offsets"] is not None:
        plain["offsets"] = [tuple(o) for o in plain["offsets"]]
    if not isinstance(plain["tokens"], list):
        raise RecordFormatError(f"{source}: the header has no token list")
    return AttentionRecord(**plain, **groups)


def save(record: AttentionRecord, path: str | os.PathLike) -> None:
    """Write a record to ``path`` (safetensors with a JSON header), atomically."""
    data = to_bytes(record)
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def load(path: str | os.PathLike) -> AttentionRecord:
    """Read a record written by :func:`save`; a truncated or foreign file raises RecordFormatError."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise RecordFormatError(f"{path}: no such file") from None
    return from_bytes(data, source=path)


def _read_header(data: bytes, source: str) -> dict[str, Any]:
    if len(data) < 8:
        raise RecordFormatError(f"{source}: not an attention record (file too short, maybe truncated)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise RecordFormatError(f"{source}: truncated or not an attention record (header runs past the end)")
    try:
        st_header = json.loads(data[8 : 8 + n].decode("utf-8"))
        text = st_header["__metadata__"][_HEADER_KEY]
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RecordFormatError(f"{source}: not an attention record (bad header: {exc})") from None
    if not isinstance(header, dict):
        raise RecordFormatError(f"{source}: not an attention record (header is not an object)")
    return header


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.dtype):
        return str(obj).replace("torch.", "")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")
