"""ap.capture: encode the text, pick an adapter, and let it turn one forward into one record per example."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..adapters import Adapter, BatchTarget, CaptureOptions, check_selection
from ..errors import InputError, UnsupportedModelError
from ..plugins import get_registry
from ..record import TENSOR_FIELDS, AttentionRecord
from .encoding import batch_size, encode, encode_inputs, encode_raw, is_batched_list, is_raw_inputs
from .oom import split_on_oom


def capture(
    model: Any,
    tokenizer: Any = None,
    text: str | Sequence[str] | None = None,
    *,
    inputs: Mapping[str, Any] | torch.Tensor | tuple | list | None = None,
    target: str | Sequence[str] | None = None,
    adapter: str | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    truncation: bool = False,
    max_length: int | None = None,
    values: bool = False,
    value_norms: bool = False,
    qk: bool = False,
    gradients: bool = False,
    gradient_target: Any = None,
    kinds: Sequence[str] | None = None,
    keep_backend: bool = False,
) -> AttentionRecord | list[AttentionRecord]:
    """Capture the attention of ``model`` on ``text`` (or tokenized ``inputs``).

    A single text gives one :class:`AttentionRecord`, a list of texts a list of records (padding
    removed). ``inputs`` are tokenized inputs (``input_ids``, ...) or the arguments of any PyTorch model's
    own forward: a tensor (``model(x)``), a tuple of positional arguments, or a mapping of keyword
    arguments; positions are then named by index, and a batch of one gives one record. ``target`` is the decoder-side text of encoder-decoder models. Text longer than the
    model's limit raises :class:`InputError` unless ``truncation=True``.

    ``layers``, ``heads`` and ``kinds`` are chosen before the forward: layers that are not captured run
    the model's own attention backend. A captured layer computes its output from the probabilities it
    records (one attention computation, as eager does; within float rounding of an uncaptured forward);
    ``keep_backend=True`` keeps the backend's output bit-identical and computes the probabilities beside it.
    """
    if (text is None) == (inputs is None):
        raise InputError("pass either text (with a tokenizer) or inputs=, not both or neither")
    if tokenizer is None:
        # Wrappers such as sentence-transformers models carry their own tokenizer.
        tokenizer = getattr(model, "tokenizer", None)
    if text is not None and tokenizer is None:
        raise InputError("capturing from text needs a tokenizer; or pass inputs= with token ids")
    if keep_backend and gradients:
        raise InputError(
            "keep_backend=True cannot go with gradients=True: the gradients are taken through the probabilities "
            "the capture computes, and with keep_backend the model's output does not depend on them"
        )
    if kinds is not None and (isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds)):
        raise InputError(f"kinds must be a list of attention kinds such as ['self'], not {kinds!r}")
    check_model_device(model)
    options = CaptureOptions(
        layers=list(layers) if layers is not None else None,
        heads=list(heads) if heads is not None else None,
        dtype=dtype,
        values=values,
        value_norms=value_norms,
        qk=qk,
        gradients=gradients,
        target=gradient_target,
        kinds=list(kinds) if kinds is not None else None,
        keep_backend=keep_backend,
    )
    if getattr(model, "training", False):
        warnings.warn(
            "the model is in training mode: dropout changes the attention weights; call model.eval() "
            "for reproducible captures",
            UserWarning,
            stacklevel=2,
        )
    run = functools.partial(
        _capture, model, tokenizer, inputs=inputs, adapter=adapter, truncation=truncation, max_length=max_length
    )
    if text is None or isinstance(text, str) or len(text) < 2 or not splittable(gradient_target):
        return run(text, target=target, options=options)
    texts = list(text)
    targets = list(target) if target is not None and not isinstance(target, str) else None

    def part(idx: list[int]) -> list[AttentionRecord]:
        """The records of the texts ``idx``: a batch of its own (on out-of-memory, ``idx`` is half a batch)."""
        opts = dataclasses.replace(options, target=take_target(gradient_target, idx))
        return run([texts[i] for i in idx], target=[targets[i] for i in idx] if targets else target, options=opts)

    def describe(i: int) -> str:
        tokens = len(encode(model, tokenizer, texts[i], truncation=truncation, max_length=max_length).source[0].tokens)
        shown = texts[i] if len(texts[i]) <= 40 else texts[i][:39] + "…"
        return f"text {i + 1} ({shown!r}, {tokens} tokens)"

    # A batch that runs out of device memory is split in halves and retried (capture/oom.py).
    return split_on_oom(part, range(len(texts)), describe)


def splittable(gradient_target: Any) -> bool:
    """Whether a batch captured with ``gradient_target`` can be cut into parts: none, a class index (each text's
    own logit), or one target per text; another callable reads the whole batch's output."""
    if isinstance(gradient_target, int) and not isinstance(gradient_target, bool):
        return True
    return gradient_target is None or isinstance(gradient_target, BatchTarget)


def take_target(gradient_target: Any, idx: Sequence[int]) -> Any:
    """The gradient target of the texts ``idx`` of a batch (a :class:`BatchTarget` cut to them)."""
    if not isinstance(gradient_target, BatchTarget):
        return gradient_target
    return BatchTarget([gradient_target.targets[i] for i in idx], [gradient_target.lengths[i] for i in idx])


def _capture(
    model: Any,
    tokenizer: Any,
    text: str | Sequence[str] | None,
    *,
    inputs: Any,
    target: str | Sequence[str] | None,
    adapter: str | None,
    options: CaptureOptions,
    truncation: bool,
    max_length: int | None,
) -> AttentionRecord | list[AttentionRecord]:
    """One capture: encode, pick the adapter, one forward (a single text gives one record, a list a list)."""
    raw = text is None and is_raw_inputs(inputs)
    single = isinstance(text, str) or (
        text is None and not raw and batch_size(inputs) == 1 and not is_batched_list(inputs)
    )
    if text is not None:
        batch = encode(model, tokenizer, text, target=target, truncation=truncation, max_length=max_length)
    elif raw:
        batch = encode_raw(inputs, model)  # the arguments of the model's own forward, passed as they are
    else:
        batch = encode_inputs(model, inputs, tokenizer=tokenizer)
    chosen = select_adapter(model, adapter)
    layout = chosen.attention_layout(model)
    if layout is not None:
        check_selection(layout, options)  # a bad selection fails before the model runs
    records = chosen.capture(model, batch, options)
    if options.kinds is not None:
        records = [_only_kinds(record, options.kinds) for record in records]
    param = _first_parameter(model)
    labels = _class_names(model)
    for record in records:
        if param is not None:
            record.meta.setdefault("model_dtype", str(param.dtype).replace("torch.", ""))
            record.meta.setdefault("model_device", str(param.device))
        if labels is not None:
            record.meta.setdefault("id2label", labels)
    if raw:
        single = len(records) == 1
    return records[0] if single else records


def _only_kinds(record: AttentionRecord, kinds: Sequence[str]) -> AttentionRecord:
    """The record with only ``kinds`` (for adapters that capture every kind); an unknown kind names the others."""
    for kind in kinds:
        if kind not in record.attentions:
            raise InputError(f"kind {kind!r}: this model has {', '.join(repr(k) for k in record.kinds)} attention")
    if set(record.attentions) == set(kinds):
        return record
    for fname in ("attentions", *TENSOR_FIELDS):
        store = getattr(record, fname)
        for kind in [k for k in store if k not in kinds]:
            del store[kind]
    return record


def _class_names(model: Any) -> dict[str, str] | None:
    """The class names of a classifier head (``config.id2label``), for reports; None for other models."""
    config = getattr(model, "config", None)
    labels = getattr(config, "id2label", None)
    logits_head = any(
        n.endswith(("ForSequenceClassification", "ForTokenClassification"))
        for n in [type(model).__name__, *(getattr(config, "architectures", None) or [])]
    )
    if not labels or not logits_head:
        return None
    return {str(k): str(v) for k, v in labels.items()}


def _first_parameter(model: Any) -> torch.Tensor | None:
    params = getattr(model, "parameters", None)
    return next(params(), None) if callable(params) else None


def check_model_device(model: Any) -> None:
    """Refuse models whose weights are not materialized (meta device); any real device is fine.

    Inputs are moved to the model's device by the adapters and records always come back on the CPU.
    """
    param = _first_parameter(model)
    if param is not None and param.device.type == "meta":
        raise InputError(
            f"{type(model).__name__} has its weights on the 'meta' device (not loaded); load the weights "
            "(e.g. from_pretrained without device_map='meta') before capturing"
        )


def select_adapter(model: Any, name: str | None = None) -> Adapter:
    """The adapter named ``name``, or the highest-priority adapter that supports ``model``."""
    registry = get_registry()
    if name is not None:
        chosen = registry.get("adapter", name)
        if not chosen.supports(model):
            raise UnsupportedModelError(f"adapter {name!r} does not support {type(model).__name__}")
        return chosen
    candidates = sorted(registry.components("adapter").items(), key=lambda kv: -getattr(kv[1], "priority", 0))
    for _, candidate in candidates:
        try:
            if candidate.supports(model):
                return candidate
        except Exception:  # a third-party adapter's check must not hide the others
            continue
    raise UnsupportedModelError(
        f"no adapter can capture attention from {type(model).__module__}.{type(model).__name__}; "
        f"registered adapters: {', '.join(n for n, _ in candidates) or 'none'}. "
        "To support it, write an adapter plugin (see docs/plugins.md)."
    )
