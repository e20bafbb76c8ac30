"""Compact encodings of tensors for pages: 8-bit square-root quantized, thresholded, deflated, base64.

Attention weights are stored as ``round(sqrt(w) * 255)``: the steps are finest near 0, where the many
small weights of long inputs live (a linear 8-bit scale would turn every weight under 0.002 into 0 and,
on a 512-token MiniLM input, lose a fifth of each row's mass). Identical payloads are stored once per page.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

import numpy as np
import torch

from ..errors import InputError

# Weights below the threshold are dropped (they compress away); 0 keeps every weight the quantization can hold.
DEFAULT_THRESHOLD = 0.0
PAYLOAD_KEY = "__attn_payload__"
REF_KEY = "__attn_ref__"


def _pack(raw: bytes, dtype: str, shape: tuple[int, ...], scale: float) -> dict[str, Any]:
    packed = zlib.compress(raw, 6)
    codec = "deflate" if len(packed) < len(raw) else "raw"
    data = packed if codec == "deflate" else raw
    return {
        PAYLOAD_KEY: 1,
        "dtype": dtype,
        "shape": [int(s) for s in shape],
        "scale": scale,
        "codec": codec,
        "data": base64.b64encode(data).decode("ascii"),
    }


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in [0, 1); anything else is a clear error."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number in [0, 1), got {threshold!r}") from None
    if not 0.0 <= value < 1.0:
        raise InputError(f"threshold must be in [0, 1), got {value}")
    return value


def quantize(weights: torch.Tensor | np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Weights in [0, 1] as uint8 ``round(sqrt(w) * 255)``; weights below ``threshold`` become 0."""
    threshold = check_threshold(threshold)
    a = torch.as_tensor(weights).detach().to(torch.float32).cpu()
    if not torch.isfinite(a).all():
        raise InputError("attention weights contain NaN or infinite values; cannot draw them")
    a = a.clamp(0.0, 1.0)
    q = torch.round(a.sqrt() * 255.0).to(torch.uint8)
    q[a < threshold] = 0
    return q.numpy()


def encode_weights(weights: torch.Tensor | np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """A payload of attention weights (any shape), decoded in the page by ``attnViews.decode``."""
    q = quantize(weights, threshold)
    return _pack(np.ascontiguousarray(q).tobytes(), "u8sqrt", q.shape, 1.0 / 255.0)


def encode_floats(values: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """A payload of float vectors (queries, keys) as little-endian float32."""
    a = torch.as_tensor(values).detach().to(torch.float32).cpu().numpy()
    if not np.isfinite(a).all():
        raise InputError("query/key vectors contain NaN or infinite values; cannot draw them")
    return _pack(np.ascontiguousarray(a, dtype="<f4").tobytes(), "f32", a.shape, 1.0)


def decode(payload: dict[str, Any]) -> np.ndarray:
    """The array a payload holds, scaled back to floats (the inverse of the encoders, for tests and tools)."""
    if not isinstance(payload, dict) or payload.get(PAYLOAD_KEY) != 1:
        raise InputError("not an attn-plugins payload")
    data = base64.b64decode(payload["data"])
    if payload["codec"] == "deflate":
        data = zlib.decompress(data)
    elif payload["codec"] != "raw":
        raise InputError(f"unknown payload codec {payload['codec']!r}")
    dtype = {"u8sqrt": np.uint8, "f32": np.dtype("<f4")}[payload["dtype"]]
    arr = np.frombuffer(data, dtype=dtype).reshape(payload["shape"]).astype(np.float32) * np.float32(payload["scale"])
    return arr * arr if payload["dtype"] == "u8sqrt" else arr


def block_id(payload: dict[str, Any]) -> str:
    """The element id of a payload's data block: named by its content, so equal payloads share one block."""
    digest = hashlib.sha1(payload["data"].encode("ascii"), usedforsecurity=False).hexdigest()[:20]
    return f"attn-data-{payload['dtype']}-{digest}"


def reference(payload: dict[str, Any], blocks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Store ``payload`` in ``blocks`` under its id and return the reference a page's parameters hold."""
    ident = block_id(payload)
    blocks[ident] = payload
    return {REF_KEY: ident}
