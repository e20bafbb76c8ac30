"""ap.capture_generate: attention of every step of a KV-cached generation, assembled into one record."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch

from ..adapters import AttentionCall, CaptureOptions, check_selection, library_versions, model_device, move_inputs
from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import SCHEMA_VERSION, AttentionRecord, choose
from .forward import check_model_device, select_adapter


def capture_generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int = 20,
    layers: list[int] | None = None,
    heads: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
    adapter: str | None = None,
    keep_backend: bool = False,
    **generate_kwargs: Any,
) -> AttentionRecord:
    """Generate from ``prompt`` with the KV cache on and return one record covering prompt and new tokens.

    Decoder-only models give ``self`` attention over prompt + generated tokens (one row per token, each
    row from the step that processed it). Encoder-decoder models give ``encoder`` attention over the
    source, and ``decoder`` and ``cross`` attention whose rows are the decoder start token and every
    generated token, so each generated token can be traced to the source. Extra keyword arguments go to
    ``model.generate`` (greedy decoding unless told otherwise). Any adapter that can listen
    (:meth:`attn_plugins.adapters.Adapter.listen`) serves, so a third-party adapter gets generation too.
    """
    if not callable(getattr(model, "generate", None)) or getattr(model, "config", None) is None:
        raise UnsupportedModelError(
            f"capture_generate needs a transformers-style model that can generate, not {type(model).__name__}"
        )
    if not isinstance(prompt, str):
        raise InputError(f"capture_generate takes one prompt string, not {type(prompt).__name__}")
    if not prompt.strip():
        raise InputError("the prompt is empty: there is nothing to generate from")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    for bad in ("values", "value_norms", "qk", "gradients"):
        if generate_kwargs.pop(bad, False):
            raise MissingCaptureError(f"capture_generate cannot capture {bad}; use ap.capture on the generated text")
    check_model_device(model)
    if model.training:
        warnings.warn("the model is in training mode: dropout changes the attention weights", UserWarning, stacklevel=2)
    options = CaptureOptions(layers=layers, heads=heads, dtype=dtype, keep_backend=keep_backend)
    enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))
    enc = tokenizer(prompt, return_tensors="pt")
    inputs = move_inputs({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, model_device(model))
    generate_kwargs.setdefault("do_sample", False)
    pad = getattr(tokenizer, "pad_token_id", None) or getattr(tokenizer, "eos_token_id", None)
    if pad is not None:
        generate_kwargs.setdefault("pad_token_id", pad)

    chosen = select_adapter(model, adapter)
    # The layers and heads per kind, learned from the prompt if the adapter can (nothing is computed): a
    # bad selection fails here, and the adapter computes only the selected layers while generating.
    probe = dict(inputs)
    if enc_dec:
        start = getattr(model.config, "decoder_start_token_id", None)
        start = (
            start
            if start is not None
            else getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
        )
        if start is not None:
            probe["decoder_input_ids"] = torch.tensor([[start]], device=inputs["input_ids"].device)
    layout = chosen.attention_layout(model, probe)
    if layout is not None:
        check_selection(layout, options)
    blocks: Blocks = {}
    seen_layers: dict[str, int] = {}

    def heard(call: AttentionCall) -> None:
        # A layer not above the last one heard starts the next forward's block (one forward per generated token).
        per_kind = blocks.setdefault(call.kind, [])
        if not per_kind or call.layer <= max(per_kind[-1]):
            per_kind.append({})
        per_kind[-1][call.layer] = call.probs[0].detach()
        total = call.num_layers if call.num_layers is not None else call.layer + 1
        seen_layers[call.kind] = max(seen_layers.get(call.kind, 0), total)

    with chosen.listen(model, options, heard), torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, use_cache=True, return_dict_in_generate=True, **generate_kwargs
        )
        _closing_step(model, inputs, out, enc_dec)
    sequence = out.sequences[0]
    if not blocks:
        raise UnsupportedModelError(
            f"adapter {chosen.name!r} heard no attention while {type(model).__name__} generated"
        )
    totals = {kind: (seen_layers[kind], next(iter(parts[0].values())).shape[0]) for kind, parts in blocks.items()}
    if layout is not None:
        totals = {kind: layout.get(kind, t) for kind, t in totals.items()}
    attentions = _assemble(blocks, options, totals)
    description = chosen.describe(model)
    source_ids = inputs["input_ids"][0].tolist()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if enc_dec:
        target_ids = sequence.tolist()
        tokens, target_tokens = tokenizer.convert_ids_to_tokens(source_ids), tokenizer.convert_ids_to_tokens(target_ids)
        new_ids = target_ids[1:]
        target_special = [i == 0 or t in special for i, t in enumerate(target_ids)]
    else:
        all_ids = sequence.tolist()
        tokens, target_tokens, target_special = tokenizer.convert_ids_to_tokens(all_ids), None, None
        new_ids = all_ids[len(source_ids) :]
    expected = len(target_tokens) if enc_dec else len(tokens)
    rows = attentions["decoder" if enc_dec else "self"].shape[2]
    if rows != expected:
        raise UnsupportedModelError(
            f"{type(model).__name__}: generation steps gave {rows} attention rows for {expected} tokens"
        )
    meta = {
        "schema_version": SCHEMA_VERSION,
        **description,
        "causal": not enc_dec,
        "generation": {"prompt_tokens": len(source_ids), "new_tokens": len(new_ids), "kv_cache": True},
        "dtype": str(dtype).replace("torch.", ""),
        "truncated": False,
        "versions": library_versions(),
    }
    # Selections are stored as the original, non-negative numbers (totals: before selection).
    if layers is not None:
        meta["layers"] = {kind: choose(layers, totals[kind][0], "layer") for kind in attentions}
    if heads is not None:
        meta["heads"] = {kind: choose(heads, totals[kind][1], "head") for kind in attentions}
    text_special = [t in special for t in (source_ids if enc_dec else sequence.tolist())]
    return AttentionRecord(
        tokens=tokens,
        attentions=attentions,
        target_tokens=target_tokens,
        special_tokens_mask=text_special,
        target_special_tokens_mask=target_special,
        text=prompt,
        outputs={"generated_ids": torch.tensor(new_ids, dtype=torch.long)},
        meta=meta,
    )


Blocks = dict[str, list[dict[int, torch.Tensor]]]  # kind -> per forward -> {layer: [heads, queries, keys]}


def _closing_step(model: Any, inputs: dict[str, torch.Tensor], out: Any, enc_dec: bool) -> Any:
    """The last generated token was never fed back; one more cached forward gives its attention row."""
    sequence = out.sequences[0]
    # Current transformers names the cache argument ``cache``; older models still take ``past_key_values``.
    params = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"
    extra = {cache_arg: out.past_key_values, "use_cache": True}
    if enc_dec:
        encoder_outputs = model.get_encoder()(**inputs, return_dict=True)
        return model(
            encoder_outputs=encoder_outputs,
            attention_mask=inputs["attention_mask"],
            decoder_input_ids=sequence[-1:].unsqueeze(0),
            **extra,
        )
    mask = torch.ones_like(sequence).unsqueeze(0)
    return model(input_ids=sequence[-1:].unsqueeze(0), attention_mask=mask, **extra)


def _assemble(blocks: Blocks, options: CaptureOptions, totals: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Place every forward's rows into one [L, H, T, T] (or [L, H, T, S] for cross) tensor per kind.

    A forward's queries are the next tokens in order; its keys are the last K positions up to and
    including its last query (sliding-window caches keep only a window, so K can stop growing). The
    encoder runs once for generation (and once more for the closing step): its first block is used.
    Each forward holds the selected layers (an adapter may also hand over the others; they are skipped).
    """
    out = {}
    for kind, parts in blocks.items():
        if kind == "encoder":
            parts = parts[:1]
        layers = choose(options.layers, totals[kind][0], "layer")
        heads = choose(options.heads, totals[kind][1], "head")
        first = next(iter(parts[0].values()))
        total = sum(next(iter(part.values())).shape[1] for part in parts)
        width = first.shape[-1] if kind == "cross" else total
        full = first.new_zeros(len(layers), len(heads), total, width)
        end = 0
        for part in parts:
            missing = [layer for layer in layers if layer not in part]
            if missing:
                raise UnsupportedModelError(f"a generation step gave no {kind} attention for layer {missing[0]}")
            q = next(iter(part.values())).shape[1]
            end += q
            for i, layer in enumerate(layers):
                p = part[layer][heads]
                if kind == "cross":
                    full[i, :, end - q : end] = p
                else:  # each layer's own key count: sliding-window layers keep fewer keys than global ones
                    full[i, :, end - q : end, end - p.shape[-1] : end] = p
        out[kind] = full.to("cpu", options.dtype).contiguous()
    return out
