"""A learned attributor: a small per-token head over attention and relevance, trained to predict Shapley values.

Per explained text, one ``cplrp_mask`` capture (one forward and one backward) gives every feature: the
attention of each layer and head from the explained rows to each token, the token's relevance (scaled to
root mean square 1 over the text's maskable tokens), their products, and whether the token is special. A head (linear, or one hidden
layer) maps each token's features to a score on the scale of per-text-normalized Shapley values
(φ / rms φ over the text's maskable tokens). It is fitted by :func:`attn_plugins.explain.learned.fit_attributor`
and stored as one safetensors file, its description (what it was trained on, how well it validated, the
model it belongs to) as JSON in the file's header; no pickle. It is bound to the model's identity (weights,
configuration, vocabulary): capturing with another model or tokenizer is refused, naming the mismatch.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord, Position
from ..record.selection import position_rows, row_weights
from .lrp import LRP

FORMAT = "attn_plugins.learned/1"
HEADER_KEY = "attn_plugins.learned"
SUFFIX = ".safetensors"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# Identities already computed, per model: reused while the model's tensors are the same objects at the same
# version (torch counts every in-place change of a tensor, so training or loading weights shows).
_IDENTITIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state(model: Any, tokenizer: Any) -> tuple[Any, ...]:
    """What the identity of ``model`` and ``tokenizer`` can change with, cheap to read."""
    tensors = tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))
    config = getattr(model, "config", None)
    settings = json.dumps(config.to_dict(), sort_keys=True, default=str) if hasattr(config, "to_dict") else None
    return tensors, settings, id(tokenizer), len(tokenizer) if hasattr(tokenizer, "__len__") else None


def model_identity(model: Any, tokenizer: Any) -> dict[str, Any]:
    """What identifies a model and its tokenizer: class, configuration, weights and vocabulary digests."""
    state = _state(model, tokenizer) if isinstance(model, torch.nn.Module) else None
    known = _IDENTITIES.get(model) if state is not None else None
    if known is not None and known[0] == state:
        return dict(known[1])
    found = _identity(model, tokenizer)
    if state is not None:
        _IDENTITIES[model] = (state, found)
    return dict(found)


def _identity(model: Any, tokenizer: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    settings = None
    if config is not None and hasattr(config, "to_dict"):
        # Where the model was loaded from is not what it is; the dtype it runs in does not change its weights.
        drop = ("_name_or_path", "torch_dtype", "dtype")
        settings = {k: v for k, v in config.to_dict().items() if k not in drop}
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            # Name, shape and a float64 sum per tensor: cheap, and any retrained or swapped weight shows.
            h.update(f"{name}{tuple(p.shape)}{float(p.double().sum()):.6e}".encode())
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return {
        "model_class": type(model).__name__,
        "config": _digest(json.dumps(settings, sort_keys=True, default=str).encode()) if settings else None,
        "weights": h.hexdigest()[:16],
        "tokenizer": _digest(json.dumps(sorted(vocab.items())).encode()),
    }


# What each identity field means, for the refusal message.
_IDENTITY_NAMES = {
    "model_class": "model class",
    "config": "model configuration",
    "weights": "model weights",
    "tokenizer": "tokenizer vocabulary",
}


class Head(torch.nn.Module):
    """Per-token scores from standardized features: linear (``hidden=0``) or one tanh hidden layer."""

    def __init__(self, n_features: int, hidden: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("std", torch.ones(n_features, dtype=torch.float64))
        if hidden:
            self.net = torch.nn.Sequential(
                torch.nn.Linear(n_features, hidden, dtype=torch.float64),
                torch.nn.Tanh(),
                torch.nn.Linear(hidden, 1, dtype=torch.float64),
            )
        else:
            self.net = torch.nn.Sequential(torch.nn.Linear(n_features, 1, dtype=torch.float64))
        torch.nn.init.zeros_(self.net[-1].weight)
        torch.nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``[tokens]`` of features ``[tokens, n_features]``: the relevance plus a learned correction."""
        # The relevance (cplrp_mask, on the targets' scale) is the prior: an untrained head (zero last
        # layer) predicts it, so fitting starts from the best method without training and corrects it.
        relevance = x[:, (x.shape[1] - 2) // 2]
        return relevance + self.net((x - self.mean) / self.std).squeeze(-1)


class LearnedAttributor(LRP):
    """The method ``learned``: a fitted :class:`Head` over one ``cplrp_mask`` capture's attention and relevance.

    ``info`` holds what the file records: ``identity`` (the model it belongs to), ``training`` (texts, their
    digest, targets, cost), ``validation`` (held-out texts and mean Spearman, with the features' own scores).
    """

    forward_passes = 1  # plus one backward pass, as cplrp_mask: 3 forward-equivalents
    captures_many = False
    kinds = ("self", "encoder")

    def __init__(self, head: Head, info: dict[str, Any]):
        super().__init__("learned", rule="cplrp", baseline="mask", description="")
        self.kinds = ("self", "encoder")
        self.head = head.eval()
        self.info = info
        self.description = "a head trained on the model's Shapley values over cplrp_mask relevance and attention"
        # Set while fitting: each record's features are collected (by the record's id), not scored.
        self._sink: dict[int, torch.Tensor] | None = None

    # ------------------------------------------------------------------ identity
    def check_model(self, model: Any, tokenizer: Any) -> None:
        """InputError naming what differs when ``model``/``tokenizer`` are not the ones it was trained for."""
        want = self.info.get("identity", {})
        have = model_identity(model, tokenizer)
        differ = [_IDENTITY_NAMES[k] for k in _IDENTITY_NAMES if want.get(k) != have.get(k)]
        if differ:
            raise InputError(
                f"this learned attributor was trained for another model: the {', '.join(differ)} differ "
                f"(trained for a {want.get('model_class')} with weights {want.get('weights')}, "
                f"given a {have['model_class']} with weights {have['weights']}); fit one for this model "
                "with ap.fit_attributor"
            )

    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """cplrp_mask's support, and the model's identity (when a tokenizer is given to check it too)."""
        super().check_support(model, tokenizer)
        if tokenizer is not None:
            self.check_model(model, tokenizer)

    def capture(self, model: Any, tokenizer: Any = None, text: Any = None, **options: Any) -> Any:
        """cplrp_mask's capture, refused on a model or tokenizer other than the one it was trained for."""
        if self._sink is None:
            self.check_model(model, tokenizer)
        return super().capture(model, tokenizer, text, **options)

    # ------------------------------------------------------------------ features and scores
    def features(self, record: AttentionRecord, position: Position = "first", kind: str | None = None) -> torch.Tensor:
        """Per-token features ``[keys, 2·L·H + 2]``: attention per head from the explained rows (L·H), relevance
        (1), their products (L·H), and the special-token flag (1)."""
        kind = self.resolve_kind(record, kind)
        att = record.check_attention(kind).detach().to(torch.float64)  # [L, H, Q, K]
        rows, how = position_rows(position, int(att.shape[2]), record, kind)
        a = att[:, :, torch.as_tensor(rows, dtype=torch.long)]  # [L, H, R, K]
        if how == "weighted":
            a = torch.einsum("lhrk,r->lhk", a, torch.as_tensor(row_weights(position, len(rows))))
        elif how == "mean":
            a = a.mean(2)
        elif how == "one":
            a = a[:, :, 0]
        else:
            raise InputError(f"method {self.name!r} explains one output: give one position, not {position!r}")
        a = a.reshape(-1, a.shape[-1]).T  # [K, L·H]
        r = torch.as_tensor(LRP.scores(self, record, kind=kind))
        special = record.special_tokens_mask or [False] * a.shape[0]
        flag = torch.as_tensor(special, dtype=torch.float64)
        # Relevance's scale differs per text; on the targets' scale (root mean square 1 over the tokens
        # shap masks) only its shape is left, which is what carries over between texts.
        players = r[flag == 0] if bool((flag == 0).any()) else r
        r = r / players.pow(2).mean().sqrt().clamp_min(1e-12)
        return torch.cat([a, r[:, None], a * r[:, None], flag[:, None]], 1)

    def __call__(
        self,
        record: AttentionRecord,
        position: Position = "first",
        *,
        layers: Any = None,
        heads: Any = None,
        head_reduce: str = "mean",
        kind: str | None = None,
        **options: Any,
    ) -> np.ndarray:
        """Predicted (per-text-normalized) Shapley values over the key tokens; special tokens get 0."""
        if options or layers is not None or heads is not None or head_reduce != "mean":
            raise InputError(f"method {self.name!r} takes no options; it reads every layer and head it was trained on")
        x = self.features(record, position, kind)
        if self._sink is not None:
            self._sink[id(record)] = x
            return np.zeros(x.shape[0])
        n = self.head.mean.shape[0]
        if x.shape[1] != n:
            raise InputError(f"the record gives {x.shape[1]} features per token; this attributor was trained on {n}")
        with torch.no_grad():
            out = self.head(x).numpy()
        out[x[:, -1].numpy() > 0] = 0.0  # shap never masks special tokens: their Shapley value is 0
        return out

    # ------------------------------------------------------------------ description
    def method_note(self) -> str:
        """One line for reports: what it was trained on and how well it validated."""
        t, v = self.info.get("training", {}), self.info.get("validation", {})
        n, distinct = t.get("texts", 0), t.get("distinct_texts", t.get("texts", 0))
        # Texts given under several references are counted once, their (text, reference) pairs beside.
        trained = f"{n:,} texts" if distinct == n else f"{distinct:,} texts ({n:,} text-reference pairs)"
        return (
            f"learned attributor trained on {trained} like these ({t.get('targets', 'Shapley values')}); "
            f"validated on {v.get('texts', 0)} held-out texts at Spearman {v.get('spearman', float('nan')):.2f} "
            f"(cplrp_mask alone {v.get('baselines', {}).get('cplrp_mask', float('nan')):.2f})"
        )

    def info_dict(self) -> dict[str, Any]:
        """Name, requirements, kinds, and what the file records."""
        return {**super().info(), **self.info}

    # ------------------------------------------------------------------ file
    def save(self, path: str | Path) -> Path:
        """Write the head's tensors and ``info`` (JSON in the header) to one safetensors file."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        header = {"format": FORMAT, "hidden": self.hidden, "n_features": int(self.head.mean.shape[0]), **self.info}
        save_file(tensors, str(path), metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
        return path

    @property
    def hidden(self) -> int:
        """Hidden units of the head (0: linear)."""
        return int(self.head.net[0].out_features) if len(self.head.net) > 1 else 0

    @classmethod
    def load(cls, path: str | Path) -> LearnedAttributor:
        """The attributor saved at ``path``, or InputError saying why the file cannot be one."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no learned attributor file at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for a damaged header or body
            raise InputError(f"{path} is not a readable safetensors file (damaged?): {e}") from None
        try:
            header = json.loads(meta[HEADER_KEY])
            if header.get("format") != FORMAT:
                raise ValueError(f"format {header.get('format')!r}, not {FORMAT!r}")
            head = Head(int(header["n_features"]), int(header["hidden"]))
            head.load_state_dict(tensors, strict=True)
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise InputError(f"{path} is not a learned attributor file (damaged or another format): {e}") from None
        if not all(torch.isfinite(t).all() for t in tensors.values()):
            raise InputError(f"{path} holds non-finite weights (damaged)")
        info = {k: v for k, v in header.items() if k not in ("format", "hidden", "n_features")}
        return cls(head, info)


def is_attributor_path(method: Any) -> bool:
    """Whether ``method`` names a learned attributor file (a path ending in ``.safetensors``)."""
    return isinstance(method, (str, Path)) and str(method).endswith(SUFFIX)
