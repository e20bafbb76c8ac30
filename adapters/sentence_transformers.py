"""sentence-transformers adapter: the attention of the transformer inside a SentenceTransformer.

The whole sentence-transformers pipeline runs (so the pooled ``sentence_embedding`` is kept with each
record), while the inner Hugging Face model is captured through the ``huggingface`` adapter's context.
sentence-transformers is optional (extra ``st``) and imported only when a model is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from attn_adapters.huggingface import HuggingFaceAdapter
from attn_plugins.adapters import Adapter, AttentionCall, CaptureOptions, EncodedBatch
from attn_plugins.errors import UnsupportedModelError
from attn_plugins.plugins import hookimpl
from attn_plugins.record import AttentionRecord

_FEATURES = ("input_ids", "attention_mask", "token_type_ids")


def _sentence_transformer_class() -> type | None:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:  # the optional extra is not installed
        return None
    return SentenceTransformer


def inner_model(model: Any) -> torch.nn.Module:
    """The Hugging Face model inside a SentenceTransformer (its first module's ``auto_model``)."""
    for module in model.modules():
        auto = getattr(module, "auto_model", None)
        if auto is not None:
            return auto
    raise UnsupportedModelError(
        f"{type(model).__name__} holds no transformers model (no module with auto_model); "
        "write an adapter plugin for it (see docs/plugins.md)"
    )


class SentenceTransformersAdapter(Adapter):
    """Captures a SentenceTransformer's transformer while the full embedding pipeline runs."""

    name = "sentence_transformers"
    priority = 30

    def supports(self, model: Any) -> bool:
        """A SentenceTransformer, when sentence-transformers is installed."""
        # Only a model whose classes come from sentence_transformers can be one: checking the class names
        # first spares every other capture the seconds that importing sentence-transformers takes.
        if not any(c.__module__.startswith("sentence_transformers") for c in type(model).__mro__):
            return False
        cls = _sentence_transformer_class()
        return cls is not None and isinstance(model, cls)

    def describe(self, model: Any) -> dict[str, Any]:
        """The inner transformer's metadata under this adapter's name."""
        inner = HuggingFaceAdapter().describe(inner_model(model))
        return {**inner, "adapter": self.name, "inner_adapter": inner["adapter"], "wrapper": type(model).__name__}

    def call(self, model: Any, inputs: dict[str, torch.Tensor], args: tuple[Any, ...] = ()) -> Any:
        """The whole sentence-transformers pipeline on the features it takes (or on the caller's own arguments)."""
        if args:
            return model(*args)
        return model({k: v for k, v in inputs.items() if k in _FEATURES})

    @contextmanager
    def listen(self, model: Any, options: CaptureOptions, on_call: Callable[[AttentionCall], None]) -> Iterator[None]:
        """Listen to the inner transformer (see the ``huggingface`` adapter)."""
        with HuggingFaceAdapter().listen(inner_model(model), options, on_call):
            yield

    def capture(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> list[AttentionRecord]:
        """Run ``model(features)`` with the inner model's attention captured; keep the sentence embedding."""
        inner = inner_model(model)
        features = {k: v for k, v in batch.inputs.items() if k in _FEATURES}

        def call(inputs: dict[str, torch.Tensor]) -> Any:
            return self.call(model, inputs)

        def keep(output: Any) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
            emb = output.get("sentence_embedding") if isinstance(output, dict) else None
            return ({"sentence_embedding": emb.detach()} if emb is not None else {}), {}

        batch.inputs = features
        _, records = HuggingFaceAdapter().run(inner, batch, options, call=call, keep=keep)
        for r in records:
            r.meta["wrapper"] = type(model).__name__
            r.meta["inner_adapter"], r.meta["adapter"] = r.meta["adapter"], self.name
        return records


@hookimpl
def attn_plugins_register_adapters(register: Callable[..., None]) -> None:
    """Register the sentence-transformers adapter."""
    register("sentence_transformers", SentenceTransformersAdapter())
