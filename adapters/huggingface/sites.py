"""Site discovery: each attention module's kind, layer order and backend, and its output projection."""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from attn_adapters.huggingface.dispatch import original_backend

_CROSS_NAME = re.compile(r"encoder_attn|crossattention|cross_attn|EncDecAttention", re.IGNORECASE)
_INDEX = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")
# Output projections of attention modules, by attribute name (module first, then its parent's `output`).
_OUT_PROJ = ("o_proj", "out_proj", "o", "out_lin", "c_proj", "dense", "Wo", "proj")


@dataclass
class Site:
    """One attention module of the model: its qualified name, kind, sort key and original backend."""

    name: str
    kind: str
    order: tuple[int, ...]
    backend: str
    cross: bool
    ref: Any = None  # weakref to the module: a cached id must still name the same module


def output_projection_module(model: torch.nn.Module, site: Site, module: torch.nn.Module) -> torch.nn.Module | None:
    """The attention output projection module (``nn.Linear`` or GPT-2's ``Conv1D``), or None if not found.

    Llama-, GPT-2-, BART-, T5-style modules hold it themselves (``o_proj``, ``c_proj``, ``out_proj``, ``o``);
    BERT-style self-attention modules leave it to their parent's ``output.dense``.
    """
    holders = [module]
    if "." in site.name:
        parent = model.get_submodule(site.name.rsplit(".", 1)[0])
        holders.append(getattr(parent, "output", None))
    for holder in holders:
        if holder is None:
            continue
        for attr in _OUT_PROJ:
            proj = getattr(holder, attr, None)
            if isinstance(proj, torch.nn.Linear) or type(proj).__name__ == "Conv1D":
                return proj
    return None


def output_projection(model: torch.nn.Module, site: Site, module: torch.nn.Module) -> torch.Tensor | None:
    """The attention output projection as a [hidden, heads * head_dim] matrix, or None if it cannot be found."""
    proj = output_projection_module(model, site, module)
    if proj is None:
        return None
    # GPT-2's Conv1D stores its weight as [in, out]; nn.Linear as [out, in].
    return proj.weight if isinstance(proj, torch.nn.Linear) else proj.weight.t()


def on_interface(model: torch.nn.Module) -> bool:
    """Whether the model's code routes attention through ``ALL_ATTENTION_FUNCTIONS`` (transformers' own check)."""
    from transformers import PreTrainedModel

    return all(m._can_set_attn_implementation() for m in model.modules() if isinstance(m, PreTrainedModel))


def find_sites(model: torch.nn.Module) -> dict[int, Site]:
    """Map ``id(module)`` of every named submodule to its :class:`Site` (kind, layer order, backend).

    Only the modules the attention function is called with are ever looked up, so naming every module
    is harmless. Kind: encoder-decoder models split on the encoder's qualified name (``get_encoder()``);
    cross-attention is told by ``is_cross_attention`` or the path (``encoder_attn``, ``crossattention``,
    ``cross_attn``, ``EncDecAttention``). Layer order: the integers in the path.
    """
    names = {id(m): name for name, m in model.named_modules()}
    encoder_prefix = None
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        encoder_prefix = names.get(id(model.get_encoder()))
    default_backend = original_backend(model.config._attn_implementation) or "eager"
    sites = {}
    for name, module in model.named_modules():
        if not name:
            continue
        cross = bool(getattr(module, "is_cross_attention", False)) or bool(_CROSS_NAME.search(name))
        if encoder_prefix is not None:
            in_encoder = encoder_prefix == "" or name.startswith(encoder_prefix + ".")
            kind = "encoder" if in_encoder else ("cross" if cross else "decoder")
        else:
            kind = "cross" if cross else "self"
        config = getattr(module, "config", None)
        backend = original_backend(getattr(config, "_attn_implementation", None)) or default_backend
        order = tuple(int(i) for i in _INDEX.findall(name))
        sites[id(module)] = Site(name, kind, order, backend, cross, weakref.ref(module))
    return sites
