"""Text to model inputs: tokenization with the model's length limit, and already-tokenized inputs.

Both give an :class:`~attn_plugins.adapters.EncodedBatch`: the model's keyword arguments plus, per
example, the token strings, word ids, offsets and special-token flags a record keeps.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..adapters import EncodedBatch, TokenInfo
from ..errors import InputError

# Sentinel tokenizers use for "no limit" (transformers' VERY_LARGE_INTEGER is about 1e30).
_NO_LIMIT = 1_000_000


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
    # Padded after the text whatever the tokenizer's side: every real token keeps the position it has alone
    # (left padding shifts absolute positions: BERT's and GPT-2's attention would change with the batch).
    enc = _tokenize(tokenizer, texts, limit, truncation, padding_side="right")
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
    elif getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        # No target: the decoder reads its start token alone (what it reads to generate the first token).
        _add_decoder_side(model, tokenizer, batch, None, truncation, limit)
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
    model: Any, tokenizer: Any, batch: EncodedBatch, targets: list[str] | None, truncation: bool, limit: int | None
) -> None:
    """Decoder inputs are the start token followed by the target's tokens (teacher forcing); the start token
    alone without ``targets``."""
    start = _decoder_start_id(model, tokenizer)
    if targets is None:
        rows, targets = [[start] for _ in batch.source], [""] * len(batch.source)
    else:
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


def batch_size(inputs: Mapping[str, Any] | None) -> int:
    """Number of examples in already-tokenized ``inputs`` (0 for None)."""
    if inputs is None:
        return 0
    key = next((k for k in ("input_ids", "inputs_embeds", "pixel_values", "input_features") if k in inputs), None)
    if key is None:
        raise InputError("inputs need input_ids (or inputs_embeds, pixel_values, input_features)")
    value = inputs[key]
    return len(value) if not isinstance(value, torch.Tensor) else (value.shape[0] if value.dim() > 1 else 1)


def is_batched_list(inputs: Mapping[str, Any] | None) -> bool:
    """Whether ``input_ids`` is a Python list of several rows (a batch, even before tensor conversion)."""
    return inputs is not None and isinstance(inputs.get("input_ids"), list) and len(inputs["input_ids"]) > 1


_MAIN_KEYS = ("input_ids", "inputs_embeds", "pixel_values", "input_features")


def is_raw_inputs(inputs: Any) -> bool:
    """Whether ``inputs`` are a model's own forward arguments (a tensor, a tuple, or a mapping without token ids)."""
    if isinstance(inputs, (torch.Tensor, tuple, list)):
        return True
    return isinstance(inputs, Mapping) and not any(k in inputs for k in _MAIN_KEYS)


def encode_raw(inputs: Any, model: Any = None) -> EncodedBatch:
    """Wrap a forward's own arguments: a tensor or a tuple/list is positional, a mapping keyword arguments.

    Given the ``model``, arguments its forward cannot take are an InputError naming them and the forward's
    signature, before the model runs.
    """
    if isinstance(inputs, torch.Tensor):
        args, kwargs = (inputs,), {}
    elif isinstance(inputs, (tuple, list)):
        args, kwargs = tuple(inputs), {}
    else:
        args, kwargs = (), dict(inputs)
    if not args and not kwargs:
        raise InputError("inputs are empty: pass the arguments of the model's forward (a tensor, a tuple or a mapping)")
    if model is not None:
        check_forward_arguments(model, args, kwargs)
    # No tokens to name: records name positions by index; no padding mask, every position is kept.
    return EncodedBatch(inputs=kwargs, source=[], source_mask=torch.ones(0), args=args, meta={"raw_inputs": True})


def check_forward_arguments(model: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """InputError naming the argument that ``model``'s forward cannot take, and its signature (nothing runs)."""
    forward = getattr(model, "forward", None)
    try:
        sig = inspect.signature(forward)
    except (TypeError, ValueError):
        return  # a forward without a readable signature (a C extension) is called as it is
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        where = f"{type(model).__name__}.forward{sig}"
        params = sig.parameters.values()
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
            positional = len(args)
        else:
            positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        keyword_only = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        if len(args) > positional:
            hint = (
                f"; {', '.join(keyword_only)} {'is' if len(keyword_only) == 1 else 'are'} keyword-only: pass "
                f"inputs={{{', '.join(repr(k) + ': ...' for k in keyword_only)}}}"
                if keyword_only
                else ""
            )
            reason = f"{len(args)} positional inputs given, it takes {positional}{hint}"
        else:
            reason = str(exc)  # inspect names the key: "got an unexpected keyword argument 'y'", "missing ... 'x'"
        raise InputError(f"inputs= do not fit {where}: {reason}") from None


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
    elif main == "inputs_embeds" and (model_inputs[main].dim() < 2 or 0 in model_inputs[main].shape[:-1]):
        raise InputError(
            f"inputs_embeds of shape {tuple(model_inputs[main].shape)} hold no position: there is nothing to attend to"
        )
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
