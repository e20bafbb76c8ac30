"""ap.capture_generate: attention of every step of a KV-cached generation, assembled into one record."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .adapter import CaptureOptions, choose
from .capture import check_model_device, library_versions, move_inputs
from .errors import InputError, MissingCaptureError, UnsupportedModelError
from .record import SCHEMA_VERSION, AttentionRecord


def capture_generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int = 20,
    layers: list[int] | None = None,
    heads: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
    **generate_kwargs: Any,
) -> AttentionRecord:
    """Generate from ``prompt`` with the KV cache on and return one record covering prompt and new tokens.

    Decoder-only models give ``self`` attention over prompt + generated tokens (one row per token, each
    row from the step that processed it). Encoder-decoder models give ``encoder`` attention over the
    source, and ``decoder`` and ``cross`` attention whose rows are the decoder start token and every
    generated token, so each generated token can be traced to the source. Extra keyword arguments go to
    ``model.generate`` (greedy decoding unless told otherwise).
    """
    from attn_adapters.eager import is_hf_model
    from attn_adapters.huggingface import model_device, on_interface

    if not is_hf_model(model) or not hasattr(model, "generate"):
        raise UnsupportedModelError(
            f"capture_generate needs a transformers model that can generate, not {type(model).__name__}"
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
    options = CaptureOptions(layers=layers, heads=heads, dtype=dtype)
    enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))
    enc = tokenizer(prompt, return_tensors="pt")
    inputs = move_inputs({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, model_device(model))
    generate_kwargs.setdefault("do_sample", False)
    pad = getattr(tokenizer, "pad_token_id", None) or getattr(tokenizer, "eos_token_id", None)
    if pad is not None:
        generate_kwargs.setdefault("pad_token_id", pad)

    if on_interface(model):
        steps, sequence, totals = _steps_through_interface(
            model, inputs, options, enc_dec, max_new_tokens, generate_kwargs
        )
        backend, adapter = model.config._attn_implementation, "huggingface"
    else:
        # Models that compute attention themselves: eager generation with output_attentions.
        steps, sequence, totals = _steps_eager(model, inputs, options, enc_dec, max_new_tokens, generate_kwargs)
        backend, adapter = "eager", "eager"
    attentions = _assemble(steps, options)
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
        "model_type": getattr(model.config, "model_type", type(model).__name__),
        "model_class": type(model).__name__,
        "adapter": adapter,
        "attention_backend": backend,
        "causal": not enc_dec,
        "exact": adapter == "eager",
        "recomputed": adapter != "eager",
        "generation": {"prompt_tokens": len(source_ids), "new_tokens": len(new_ids), "kv_cache": True},
        "num_key_value_heads": getattr(model.config, "num_key_value_heads", None),
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


Steps = list[dict[str, list[torch.Tensor]]]  # per forward pass: kind -> per-layer [heads, queries, keys]
Totals = dict[str, tuple[int, int]]  # kind -> (layers, heads) before selection


def _closing_step(model: Any, inputs: dict[str, torch.Tensor], out: Any, enc_dec: bool, **kwargs: Any) -> Any:
    """The last generated token was never fed back; one more cached forward gives its attention row."""
    sequence = out.sequences[0]
    extra = {"past_key_values": out.past_key_values, "use_cache": True, **kwargs}
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


def _steps_through_interface(
    model: Any, inputs: dict, options: CaptureOptions, enc_dec: bool, max_new_tokens: int, kwargs: dict
) -> tuple[Steps, torch.Tensor, Totals]:
    """Generate with the huggingface capture function installed; a forward pre-hook marks each step."""
    from attn_adapters.huggingface import CaptureContext

    ctx = CaptureContext(model, options)
    handle = model.register_forward_pre_hook(lambda *_: ctx.begin_step())
    try:
        with ctx.active(), torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, use_cache=True, return_dict_in_generate=True, **kwargs
            )
            ctx.begin_step()
            _closing_step(model, inputs, out, enc_dec)
    finally:
        handle.remove()
    steps: Steps = []
    for step in ctx.steps:
        by_kind, _ = ctx.stacked(step, options)
        steps.append({kind: [c.probs[0] for c in calls] for kind, calls in by_kind.items()})
    # The first step holds every kind (the encoder runs once, then the decoder's first step).
    totals = {k: v for step in ctx.steps for k, v in ctx.totals(step).items()}
    return steps, out.sequences[0], totals


def _steps_eager(
    model: Any, inputs: dict, options: CaptureOptions, enc_dec: bool, max_new_tokens: int, kwargs: dict
) -> tuple[Steps, torch.Tensor, Totals]:
    """Generate in eager mode with ``output_attentions``; each generation step's tuple is one step."""
    from attn_adapters.eager import attn_implementation

    def pick(per_layer: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [per_layer[i][0] for i in choose(options.layers, len(per_layer), "layer")]

    with attn_implementation(model, "eager"), torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            use_cache=True,
            return_dict_in_generate=True,
            output_attentions=True,
            **kwargs,
        )
        last = _closing_step(model, inputs, out, enc_dec, output_attentions=True, return_dict=True)
    if enc_dec:
        steps: Steps = [{"encoder": pick(out.encoder_attentions)}]
        pairs = list(zip(out.decoder_attentions, out.cross_attentions))
        pairs.append((last.decoder_attentions, last.cross_attentions))
        steps += [{"decoder": pick(d), "cross": pick(c)} for d, c in pairs]
    else:
        steps = [{"self": pick(a)} for a in (*out.attentions, last.attentions)]
    sources = (
        {"self": out.attentions[0]}
        if not enc_dec
        else {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions[0], "cross": out.cross_attentions[0]}
    )
    totals = {kind: (len(per_layer), per_layer[0].shape[1]) for kind, per_layer in sources.items()}
    return steps, out.sequences[0], totals


def _assemble(steps: Steps, options: CaptureOptions) -> dict[str, torch.Tensor]:
    """Place every step's rows into one [L, H, T, T] (or [L, H, T, S] for cross) tensor per kind.

    A step's queries are the next tokens in order; its keys are the last K positions up to and
    including its last query (sliding-window caches keep only a window, so K can stop growing).
    """
    blocks: dict[str, list[tuple[int, list[torch.Tensor]]]] = {}
    ends: dict[str, int] = {}
    for step in steps:
        for kind, per_layer in step.items():
            if kind == "encoder" and "encoder" in blocks:
                continue  # the encoder runs once for generation (and once more for the closing step)
            heads = None if options.heads is None else choose(options.heads, per_layer[0].shape[0], "head")
            probs = [p if heads is None else p[heads] for p in per_layer]
            end = ends.get(kind, 0) + probs[0].shape[1]
            ends[kind] = end
            blocks.setdefault(kind, []).append((end, probs))
    out = {}
    for kind, parts in blocks.items():
        total = ends[kind]
        layers, heads = len(parts[0][1]), parts[0][1][0].shape[0]
        width = parts[0][1][0].shape[-1] if kind == "cross" else total
        full = parts[0][1][0].new_zeros(layers, heads, total, width)
        for end, probs in parts:
            for layer, p in enumerate(probs):
                q, k = p.shape[1], p.shape[2]
                if kind == "cross":
                    full[layer, :, end - q : end] = p
                else:
                    full[layer, :, end - q : end, end - k : end] = p
        out[kind] = full
    return {kind: t.to("cpu", options.dtype).contiguous() for kind, t in out.items()}
