"""ap.capture: tokenize, pick an adapter, run it, and split the batch into one record per example."""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .adapter import Adapter, CaptureOptions, EncodedBatch, TokenInfo, choose
from .errors import InputError, UnsupportedModelError
from .manager import get_registry
from .record import SCHEMA_VERSION, TENSOR_FIELDS, AttentionRecord

# Sentinel tokenizers use for "no limit" (transformers' VERY_LARGE_INTEGER is about 1e30).
_NO_LIMIT = 1_000_000


def capture(
    model: Any,
    tokenizer: Any = None,
    text: str | Sequence[str] | None = None,
    *,
    inputs: Mapping[str, Any] | None = None,
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
) -> AttentionRecord | list[AttentionRecord]:
    """Capture the attention of ``model`` on ``text`` (or tokenized ``inputs``).

    A single text gives one :class:`AttentionRecord`, a list of texts a list of records (padding
    removed). ``target`` is the decoder-side text of encoder-decoder models. Text longer than the
    model's limit raises :class:`InputError` unless ``truncation=True``.
    """
    if (text is None) == (inputs is None):
        raise InputError("pass either text (with a tokenizer) or inputs=, not both or neither")
    if tokenizer is None:
        # Wrappers such as sentence-transformers models carry their own tokenizer.
        tokenizer = getattr(model, "tokenizer", None)
    if text is not None and tokenizer is None:
        raise InputError("capturing from text needs a tokenizer; or pass inputs= with token ids")
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
    )
    single = isinstance(text, str) or (text is None and _batch_size(inputs) == 1 and not _is_batched_list(inputs))
    if text is not None:
        batch = encode(model, tokenizer, text, target=target, truncation=truncation, max_length=max_length)
    else:
        batch = encode_inputs(model, inputs, tokenizer=tokenizer)
    chosen = select_adapter(model, adapter)
    if getattr(model, "training", False):
        warnings.warn(
            "the model is in training mode: dropout changes the attention weights; call model.eval() "
            "for reproducible captures",
            UserWarning,
            stacklevel=2,
        )
    records = chosen.capture(model, batch, options)
    param = _first_parameter(model)
    labels = _class_names(model)
    for record in records:
        if param is not None:
            record.meta.setdefault("model_dtype", str(param.dtype).replace("torch.", ""))
            record.meta.setdefault("model_device", str(param.device))
        if labels is not None:
            record.meta.setdefault("id2label", labels)
    return records[0] if single else records


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


# ---------------------------------------------------------------------------- encoding
def model_max_length(model: Any, tokenizer: Any = None) -> int | None:
    """The longest input the model accepts, from the tokenizer and the model config."""
    limits = []
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < _NO_LIMIT:
        limits.append(tok_limit)
    st_limit = getattr(model, "max_seq_length", None)  # sentence-transformers models
    if isinstance(st_limit, int) and st_limit > 0:
        limits.append(st_limit)
    config = getattr(model, "config", None)
    if config is not None:
        for cfg in (config, getattr(config, "text_config", None), getattr(config, "encoder", None)):
            n = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
            if isinstance(n, int) and n > 0:
                # RoBERTa-style models offset positions by padding_idx + 1.
                if getattr(cfg, "model_type", "") in _OFFSET_POSITION_TYPES:
                    n -= int(getattr(cfg, "pad_token_id", 1) or 1) + 1
                limits.append(n)
                break
    return min(limits) if limits else None


_OFFSET_POSITION_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xlm-roberta-xl"}


def _check_texts(texts: Sequence[str], what: str) -> None:
    if len(texts) == 0:
        raise InputError(f"the {what} batch is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{what} {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise InputError(f"{what} {i} is empty: there is nothing to attend to")


def _token_infos(tokenizer: Any, enc: Any, texts: Sequence[str], mask: torch.Tensor) -> list[TokenInfo]:
    ids = enc["input_ids"]
    fast = getattr(enc, "is_fast", False) or getattr(tokenizer, "is_fast", False)
    infos = []
    for b, text in enumerate(texts):
        keep = mask[b].bool()
        row_ids = ids[b][keep].tolist()
        tokens = tokenizer.convert_ids_to_tokens(row_ids)
        special = None
        if "special_tokens_mask" in enc:
            special = [bool(x) for x in torch.as_tensor(enc["special_tokens_mask"][b])[keep].tolist()]
        word_ids = offsets = None
        if fast and hasattr(enc, "word_ids"):
            all_word_ids = enc.word_ids(b)
            word_ids = [w for w, k in zip(all_word_ids, keep.tolist()) if k]
            if "offset_mapping" in enc:
                offsets = [tuple(int(x) for x in o) for o in torch.as_tensor(enc["offset_mapping"][b])[keep].tolist()]
        infos.append(TokenInfo(tokens, word_ids, offsets, special, text))
    return infos


def _tokenize(tokenizer: Any, texts: list[str], limit: int | None, truncation: bool, **kwargs: Any) -> Any:
    fast = getattr(tokenizer, "is_fast", False)
    common = dict(return_special_tokens_mask=True, return_offsets_mapping=fast, **kwargs)
    if limit is not None:
        lengths = [len(x) for x in tokenizer(texts, add_special_tokens=True, **kwargs)["input_ids"]]
        longest = max(lengths)
        if longest > limit and not truncation:
            raise InputError(
                f"the text has {longest} tokens but the model accepts at most {limit}; "
                "pass truncation=True (CLI: --truncate) to cut it"
            )
        enc = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt", **common)
        enc.truncated_flags = [n > limit for n in lengths]
        return enc
    enc = tokenizer(texts, padding=True, return_tensors="pt", **common)
    enc.truncated_flags = [False] * len(texts)
    return enc


def encode(
    model: Any,
    tokenizer: Any,
    text: str | Sequence[str],
    *,
    target: str | Sequence[str] | None = None,
    truncation: bool = False,
    max_length: int | None = None,
) -> EncodedBatch:
    """Tokenize texts (and decoder targets) into an :class:`EncodedBatch`, checking empties and limits."""
    texts = [text] if isinstance(text, str) else list(text)
    _check_texts(texts, "text")
    limit = max_length if max_length is not None else model_max_length(model, tokenizer)
    if tokenizer.pad_token is None and len(texts) > 1:
        raise InputError("the tokenizer has no pad token, so a batch cannot be padded; set tokenizer.pad_token")
    enc = _tokenize(tokenizer, texts, limit, truncation)
    source_mask = enc["attention_mask"] if "attention_mask" in enc else torch.ones_like(enc["input_ids"])
    source = _token_infos(tokenizer, enc, texts, source_mask)
    for info, flag in zip(source, enc.truncated_flags):
        info.truncated = flag
    inputs: dict[str, torch.Tensor] = {"input_ids": enc["input_ids"], "attention_mask": source_mask}
    if "token_type_ids" in enc:
        inputs["token_type_ids"] = enc["token_type_ids"]
    batch = EncodedBatch(inputs=inputs, source=source, source_mask=source_mask)
    if target is not None:
        targets = [target] if isinstance(target, str) else list(target)
        if len(targets) != len(texts):
            raise InputError(f"{len(texts)} texts but {len(targets)} targets")
        _check_texts(targets, "target")
        _add_decoder_side(model, tokenizer, batch, targets, truncation, limit)
    return batch


def _decoder_start_id(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    for cfg in (getattr(model, "generation_config", None), config, getattr(config, "decoder", None)):
        start = getattr(cfg, "decoder_start_token_id", None) if cfg is not None else None
        if start is not None:
            return int(start)
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return int(tokenizer.pad_token_id)
    raise InputError("cannot tell the decoder start token: set model.config.decoder_start_token_id")


def _add_decoder_side(
    model: Any, tokenizer: Any, batch: EncodedBatch, targets: list[str], truncation: bool, limit: int | None
) -> None:
    """Decoder inputs are the start token followed by the target's tokens (teacher forcing)."""
    start = _decoder_start_id(model, tokenizer)
    enc = tokenizer(text_target=targets, add_special_tokens=True)
    rows = [[start, *ids] for ids in enc["input_ids"]]
    if limit is not None and max(map(len, rows)) > limit:
        if not truncation:
            raise InputError(f"the target has {max(map(len, rows))} tokens but the model accepts at most {limit}")
    truncated = [limit is not None and len(r) > limit for r in rows]
    if limit is not None:
        rows = [r[:limit] for r in rows]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):  # one short list per example, not a per-token loop
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    infos = []
    for b, r in enumerate(rows):
        tokens = tokenizer.convert_ids_to_tokens(r)
        special = [i == 0 or tid in special_ids for i, tid in enumerate(r)]
        infos.append(TokenInfo(tokens, None, None, special, targets[b], truncated[b]))
    batch.inputs["decoder_input_ids"] = ids
    batch.inputs["decoder_attention_mask"] = mask
    batch.target, batch.target_mask = infos, mask


def _batch_size(inputs: Mapping[str, Any] | None) -> int:
    if inputs is None:
        return 0
    key = next((k for k in ("input_ids", "inputs_embeds", "pixel_values", "input_features") if k in inputs), None)
    if key is None:
        raise InputError("inputs need input_ids (or inputs_embeds, pixel_values, input_features)")
    value = inputs[key]
    return len(value) if not isinstance(value, torch.Tensor) else (value.shape[0] if value.dim() > 1 else 1)


def _is_batched_list(inputs: Mapping[str, Any] | None) -> bool:
    return inputs is not None and isinstance(inputs.get("input_ids"), list) and len(inputs["input_ids"]) > 1


def encode_inputs(model: Any, inputs: Mapping[str, Any], tokenizer: Any = None) -> EncodedBatch:
    """Wrap already-tokenized inputs (a BatchEncoding or dict) into an :class:`EncodedBatch`."""
    model_inputs: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        if key in ("offset_mapping", "special_tokens_mask", "overflow_to_sample_mapping", "length"):
            continue
        t = torch.as_tensor(value)
        if key in ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask"):
            t = t.long()
            if t.dim() == 1:
                t = t.unsqueeze(0)
        model_inputs[key] = t
    main = next(
        (k for k in ("input_ids", "inputs_embeds", "pixel_values", "input_features") if k in model_inputs), None
    )
    if main is None:
        raise InputError("inputs need input_ids (or inputs_embeds, pixel_values, input_features)")
    if main == "input_ids":
        ids = model_inputs["input_ids"]
        if ids.numel() == 0 or ids.shape[-1] == 0:
            raise InputError("input_ids is empty: there is nothing to attend to")
        mask = model_inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
            model_inputs["attention_mask"] = mask
        limit = model_max_length(model, tokenizer)
        if limit is not None and ids.shape[-1] > limit:
            raise InputError(f"the input has {ids.shape[-1]} tokens but the model accepts at most {limit}")
        source = []
        for b in range(ids.shape[0]):
            row = ids[b][mask[b].bool()].tolist()
            tokens = tokenizer.convert_ids_to_tokens(row) if tokenizer is not None else [str(i) for i in row]
            special = None
            if tokenizer is not None and getattr(tokenizer, "all_special_ids", None):
                special_ids = set(tokenizer.all_special_ids)
                special = [i in special_ids for i in row]
            source.append(TokenInfo(tokens, special_tokens_mask=special))
    elif main == "inputs_embeds" and "attention_mask" in model_inputs:
        # Embeddings with a padding mask: real positions are named by their index. (Audio masks run over
        # frames, not encoder positions, so they are not used to cut records.)
        mask = model_inputs["attention_mask"].long()
        if mask.dim() == 1:
            mask = mask.unsqueeze(0)
        source = [TokenInfo([str(i) for i in range(int(row.sum()))]) for row in mask]
    else:
        # Non-text inputs (images, audio): positions are named by their index.
        mask = None
        source = []
    batch = EncodedBatch(inputs=model_inputs, source=source, source_mask=mask if mask is not None else torch.ones(0))
    if "decoder_input_ids" in model_inputs:
        dec = model_inputs["decoder_input_ids"]
        dmask = model_inputs.get("decoder_attention_mask")
        if dmask is None:
            dmask = torch.ones_like(dec)
        batch.target_mask = dmask
        batch.target = []
        for b in range(dec.shape[0]):
            row = dec[b][dmask[b].bool()].tolist()
            tokens = tokenizer.convert_ids_to_tokens(row) if tokenizer is not None else [str(i) for i in row]
            batch.target.append(TokenInfo(tokens))
    return batch


# ---------------------------------------------------------------------------- devices
def move_inputs(inputs: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Model inputs with every tensor on ``device`` (records are always built on the CPU afterwards)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


# ---------------------------------------------------------------------------- splitting
@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    out = []
    for dist in ("attn-plugins", "torch", "transformers"):
        try:
            out.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(out)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a capture, for a record's meta (read once per process)."""
    return dict(_versions())


def split_batch(
    batch: EncodedBatch,
    attentions: dict[str, torch.Tensor],
    *,
    options: CaptureOptions,
    meta: dict[str, Any],
    extras: dict[str, dict[str, torch.Tensor]] | None = None,
    outputs: dict[str, torch.Tensor] | None = None,
    sequence_outputs: Mapping[str, str] | None = None,
    totals: Mapping[str, tuple[int, int]] | None = None,
) -> list[AttentionRecord]:
    """Cut batched tensors ``[batch, layers, heads, queries, keys]`` into one record per example.

    ``totals`` (layers and heads per kind before selection) lets a selection with negative indices be
    stored as the original, non-negative numbers.

    Padding rows and columns are removed with the batch masks (left or right padding alike).
    ``extras`` maps an optional field (``values``, ``gradients``, ...) to per-kind batched tensors;
    ``outputs`` are batched model outputs, and ``sequence_outputs`` names those whose second axis runs
    over the source or target tokens so padding is removed from them too.
    """
    extras = extras or {}
    outputs = outputs or {}
    sequence_outputs = sequence_outputs or {}
    records = []
    n = next(iter(attentions.values())).shape[0]
    for b in range(n):
        src_keep = _keep(batch.source_mask, b)
        tgt_keep = _keep(batch.target_mask, b) if batch.target_mask is not None else None
        sides = {"source": src_keep, "target": tgt_keep}
        axes = {
            "self": (src_keep, src_keep),
            "encoder": (src_keep, src_keep),
            "decoder": (tgt_keep, tgt_keep),
            "cross": (tgt_keep, src_keep),
        }

        def cut(t: torch.Tensor, q: torch.Tensor | None, k: torch.Tensor | None, b: int = b) -> torch.Tensor:
            t = t[b]
            if q is not None:
                t = _take(t, 2, q)
            if k is not None and t.dim() > 3:
                t = _take(t, 3, k)
            return t

        atts = {}
        for kind, t in attentions.items():
            q, k = axes[kind]
            atts[kind] = _finish(cut(t, q, k), options)
        fields: dict[str, dict[str, torch.Tensor]] = {f: {} for f in TENSOR_FIELDS}
        for fname, per_kind in extras.items():
            if fname not in fields:
                raise ValueError(
                    f"split_batch: unknown optional field {fname!r}; fields are {', '.join(TENSOR_FIELDS)}"
                )
            for kind, t in per_kind.items():
                q, k = axes[kind]
                if fname == "gradients":
                    fields[fname][kind] = _finish(cut(t, q, k), options)
                elif fname == "queries":
                    fields[fname][kind] = _finish(cut(t, q, None), options)
                else:
                    fields[fname][kind] = _finish(cut(t, k, None), options)
        outs = {}
        for key, t in outputs.items():
            o = t[b].detach().cpu()
            side = sequence_outputs.get(key)
            if side and sides.get(side) is not None:
                o = o.index_select(0, sides[side])
            outs[key] = o
        src = batch.source[b] if batch.source else TokenInfo([str(i) for i in range(atts[next(iter(atts))].shape[-1])])
        tgt = batch.target[b] if batch.target else None
        record_meta = {
            "schema_version": SCHEMA_VERSION,
            **meta,
            "dtype": str(options.dtype).replace("torch.", ""),
            "truncated": bool(src.truncated or (tgt.truncated if tgt else False)),
            "versions": library_versions(),
        }
        for key, selection, axis in (("layers", options.layers, 0), ("heads", options.heads, 1)):
            if selection is not None:
                record_meta[key] = {
                    kind: choose(selection, totals[kind][axis], key[:-1])
                    if totals and kind in totals
                    else list(selection)
                    for kind in atts
                }
        records.append(
            AttentionRecord(
                tokens=src.tokens,
                attentions=atts,
                target_tokens=tgt.tokens if tgt else None,
                word_ids=src.word_ids,
                target_word_ids=tgt.word_ids if tgt else None,
                offsets=src.offsets,
                special_tokens_mask=src.special_tokens_mask,
                target_special_tokens_mask=tgt.special_tokens_mask if tgt else None,
                text=src.text,
                target_text=tgt.text if tgt else None,
                outputs=outs,
                meta=record_meta,
                **fields,
            )
        )
    return records


def _take(t: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    """``t.index_select(dim, idx)``, as a view when ``idx`` is one contiguous run (left or right padding).

    A gather along the key axis dominated capture time; real tokens are almost always contiguous.
    """
    n = idx.numel()
    if n and int(idx[-1]) - int(idx[0]) == n - 1:
        return t.narrow(dim, int(idx[0]), n)
    return t.index_select(dim, idx)


def _keep(mask: torch.Tensor | None, b: int) -> torch.Tensor | None:
    if mask is None or mask.numel() == 0:
        return None
    return torch.nonzero(mask[b].bool(), as_tuple=False).flatten()


def _finish(t: torch.Tensor, options: CaptureOptions) -> torch.Tensor:
    return t.detach().to("cpu", options.dtype).contiguous()
