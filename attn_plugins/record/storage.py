"""Saving and loading AttentionRecords: safetensors for tensors, a JSON header for the rest, no pickle."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import RecordFormatError, RecordValidationError
from ..files import write_atomic
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
    for name in ("special_tokens_mask", "target_special_tokens_mask"):
        if isinstance(header[name], (list, tuple)):  # 0/1 flags are stored as the booleans they mean
            header[name] = [bool(x) if isinstance(x, (int, np.integer)) else x for x in header[name]]
    header["meta"] = {**record.meta, "schema_version": SCHEMA_VERSION}
    try:
        text = json.dumps(header, default=_json_default)
    except TypeError as exc:
        raise RecordFormatError(f"record metadata is not JSON-serializable: {exc}") from exc
    return st_save(tensors, metadata={_HEADER_KEY: text})


def from_bytes(data: bytes, source: str = "<bytes>") -> AttentionRecord:
    """Parse bytes written by :func:`to_bytes`; never executes anything from the data.

    Anything that is not a consistent record is a :class:`RecordFormatError` naming ``source`` and the
    field: a malformed header, a field of the wrong type, an unknown schema version, corrupted tensors,
    or a record that fails :meth:`AttentionRecord.validate` (tokens against attention sizes, kinds, ranks,
    dtypes, finite values).
    """
    header = _read_header(data, source)
    meta = header.get("meta")
    if not isinstance(meta, dict):
        raise RecordFormatError(f"{source}: header field 'meta' must be an object, got {_json_type(meta)}")
    version = meta.get("schema_version")
    if type(version) is not int or version < 1:
        raise RecordFormatError(
            f"{source}: header field 'meta.schema_version' must be a positive integer, got {version!r}"
        )
    if version > SCHEMA_VERSION:
        raise RecordFormatError(
            f"{source}: written with schema version {version}, but this attn-plugins reads up to "
            f"version {SCHEMA_VERSION}; upgrade attn-plugins to load it"
        )
    plain = {name: header.get(name) for name in _PLAIN_FIELDS}
    for name, check in _FIELD_TYPES.items():
        if not check(plain[name]):
            raise RecordFormatError(
                f"{source}: header field {name!r} must be {_FIELD_WORDS[name]}, got {_json_type(plain[name])}"
            )
    if plain["offsets"] is not None:
        plain["offsets"] = [tuple(o) for o in plain["offsets"]]
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises several types on damaged data; none may escape as-is
        raise RecordFormatError(f"{source}: corrupted tensor data ({type(exc).__name__}: {exc})") from None
    groups: dict[str, dict[str, torch.Tensor]] = {g: {} for g in _TENSOR_GROUPS}
    for name, t in tensors.items():
        group, _, key = name.partition("/")
        if group not in groups or not key:
            raise RecordFormatError(f"{source}: unexpected tensor {name!r}")
        groups[group][key] = t
    if version == 1:
        _sinks_from_version_1(groups)
    record = AttentionRecord(**plain, **groups)
    try:
        record.validate()
    except RecordValidationError as exc:
        raise RecordFormatError(f"{source}: not a consistent record: {exc}") from None
    return record


def _sinks_from_version_1(groups: dict[str, dict[str, torch.Tensor]]) -> None:
    """Version 1 kept rows renormalized to 1 and the sink share in ``extras['sink_mass.<kind>']``: move it
    to the ``sink_mass`` field and give the rows back the model's exact weights (rows * (1 - sink))."""
    for key in [k for k in groups["extras"] if k.startswith("sink_mass.")]:
        kind = key.split(".", 1)[1]
        att = groups["attentions"].get(kind)
        sink = groups["extras"][key]
        if att is None or not att.is_floating_point() or tuple(sink.shape) != tuple(att.shape[:3]):
            continue  # not what version 1 wrote: left for validate() to name
        del groups["extras"][key]
        groups["sink_mass"][kind] = sink
        groups["attentions"][kind] = (att.float() * (1 - sink.float()).unsqueeze(-1)).to(att.dtype)


def save(record: AttentionRecord, path: str | os.PathLike) -> None:
    """Write a record to ``path`` (safetensors with a JSON header), atomically; nothing is left on failure."""
    write_atomic(path, to_bytes(record))


def load(path: str | os.PathLike) -> AttentionRecord:
    """Read and validate a record written by :func:`save`; any failure is a RecordFormatError naming the file."""
    try:
        name = os.fspath(path)
    except TypeError:
        raise RecordFormatError(f"a record path must be a string or a path, got {type(path).__name__}") from None
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise RecordFormatError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise RecordFormatError(f"{name}: is a directory, not a record file") from None
    except (OSError, ValueError) as exc:  # permissions, a name too long, a NUL in the path, ...
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RecordFormatError(f"{name!r}: cannot be read ({reason})") from None
    return from_bytes(data, source=name)


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
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise RecordFormatError(f"{source}: not an attention record (bad header: {exc})") from None
    except RecursionError:
        raise RecordFormatError(f"{source}: not an attention record (the header is nested too deeply)") from None
    if not isinstance(header, dict):
        raise RecordFormatError(f"{source}: not an attention record (header is not an object)")
    return header


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_int(v: Any) -> bool:
    return type(v) is int


def _optional(check: Any) -> Any:
    return lambda v: v is None or check(v)


# What each plain header field may hold (JSON types); the record's validate() checks the rest.
_FIELD_TYPES = {
    "tokens": lambda v: _is_str_list(v) and len(v) > 0,
    "target_tokens": _optional(_is_str_list),
    "word_ids": _optional(lambda v: isinstance(v, list) and all(x is None or _is_int(x) for x in v)),
    "target_word_ids": _optional(lambda v: isinstance(v, list) and all(x is None or _is_int(x) for x in v)),
    "offsets": _optional(
        lambda v: isinstance(v, list) and all(isinstance(o, list) and len(o) == 2 and all(map(_is_int, o)) for o in v)
    ),
    "special_tokens_mask": _optional(lambda v: isinstance(v, list) and all(isinstance(x, bool) for x in v)),
    "target_special_tokens_mask": _optional(lambda v: isinstance(v, list) and all(isinstance(x, bool) for x in v)),
    "text": _optional(lambda v: isinstance(v, str)),
    "target_text": _optional(lambda v: isinstance(v, str)),
}
_FIELD_WORDS = {
    "tokens": "a non-empty list of strings",
    "target_tokens": "a list of strings or null",
    "word_ids": "a list of integers and nulls, or null",
    "target_word_ids": "a list of integers and nulls, or null",
    "offsets": "a list of [start, end] integer pairs, or null",
    "special_tokens_mask": "a list of booleans, or null",
    "target_special_tokens_mask": "a list of booleans, or null",
    "text": "a string or null",
    "target_text": "a string or null",
}


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, str):
        return f"the string {v[:40]!r}"
    if isinstance(v, list):
        return f"a list of {len(v)} items"
    return f"an object with {len(v)} keys" if isinstance(v, dict) else type(v).__name__


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.dtype):
        return str(obj).replace("torch.", "")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")
