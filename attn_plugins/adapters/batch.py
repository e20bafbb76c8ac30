"""Batch plumbing every adapter shares: inputs onto the model's device, and one record per example out.

An adapter runs the model on a whole padded batch; :func:`split_batch` cuts the batched tensors into
one :class:`~attn_plugins.record.AttentionRecord` per example, removing padding on the sides the kind
table (:data:`attn_plugins.record.SIDES`) names.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError
from ..record import SCHEMA_VERSION, TENSOR_AXES, TENSOR_FIELDS, AttentionRecord
from ..record.kinds import by_side
from ..record.numbering import choose
from .contract import CaptureOptions, EncodedBatch, TokenInfo


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    params = getattr(model, "parameters", None)
    param = next(params(), None) if callable(params) else None
    return param.device if param is not None else torch.device("cpu")


def move_inputs(inputs: Any, device: torch.device | str) -> Any:
    """Model inputs (a mapping, a tuple or list of arguments, a tensor) with every tensor on ``device``.

    Nested mappings and sequences are followed; records are always built on the CPU afterwards.
    """
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: move_inputs(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(move_inputs(v, device) for v in inputs)
    return inputs


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


def check_selection(totals: Mapping[str, tuple[int, int]], options: CaptureOptions) -> None:
    """Refuse ``layers=``, ``heads=`` or ``kinds=`` the model does not have, naming what it has.

    ``totals`` is ``{kind: (layers, heads)}`` (:meth:`Adapter.attention_layout`); called before the forward.
    """
    if options.kinds is not None:
        if not options.kinds:
            raise InputError("the kinds selection is empty")
        for kind in options.kinds:
            if kind not in totals:
                raise InputError(f"kind {kind!r}: this model has {', '.join(repr(k) for k in totals)} attention")
    for kind, (layers, heads) in totals.items():
        if options.kinds is not None and kind not in options.kinds:
            continue
        choose(options.layers, layers, f"{kind} layer")
        choose(options.heads, heads, "head")


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
    per_example: Sequence[Mapping[str, Mapping[str, torch.Tensor]]] | None = None,
) -> list[AttentionRecord]:
    """Cut batched tensors ``[batch, layers, heads, queries, keys]`` into one record per example.

    ``per_example`` (one ``{field: {kind: tensor}}`` per example, ``field`` being ``"attentions"`` or an
    optional field) holds tensors an adapter already wrote cut to the example's real tokens, in the
    record's dtype, on the CPU: they become the record's own tensors as they are, without a copy.

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
    n = len(per_example) if per_example is not None else next(iter(attentions.values())).shape[0]
    for b in range(n):
        src_keep = _keep(batch.source_mask, b)
        tgt_keep = _keep(batch.target_mask, b) if batch.target_mask is not None else None
        sides = {"source": src_keep, "target": tgt_keep}

        def cut(
            t: torch.Tensor, first: torch.Tensor | None, second: torch.Tensor | None, *_: Any, b: int = b
        ) -> torch.Tensor:
            """Example ``b`` of ``t`` with padding cut from the axes after [layers, heads]."""
            t = t[b]
            if first is not None:
                t = _take(t, 2, first)
            if second is not None and t.dim() > 3:
                t = _take(t, 3, second)
            return t

        atts = {kind: _finish(cut(t, *by_side(kind, src_keep, tgt_keep)), options) for kind, t in attentions.items()}
        fields: dict[str, dict[str, torch.Tensor]] = {f: {} for f in TENSOR_FIELDS}
        for fname, per_kind in (per_example[b] if per_example is not None else {}).items():
            if fname != "attentions" and fname not in fields:
                raise ValueError(
                    f"split_batch: unknown field {fname!r}; fields are attentions, {', '.join(TENSOR_FIELDS)}"
                )
            (atts if fname == "attentions" else fields[fname]).update(per_kind)
        for fname, per_kind in extras.items():
            if fname not in fields:
                raise ValueError(
                    f"split_batch: unknown optional field {fname!r}; fields are {', '.join(TENSOR_FIELDS)}"
                )
            for kind, t in per_kind.items():
                q, k = by_side(kind, src_keep, tgt_keep)
                keep = {"query": q, "key": k}
                fields[fname][kind] = _finish(cut(t, *(keep[axis] for axis in TENSOR_AXES[fname]), None), options)
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
