"""Layout discovery: a forward that computes nothing extra and notes the place of every attention call."""

from __future__ import annotations

import torch

from attn_adapters.huggingface.layout import _KIND_ORDER, Layout
from attn_adapters.huggingface.recording import CaptureContext
from attn_adapters.huggingface.sites import Site
from attn_plugins.adapters import CaptureOptions


class Discovery(CaptureContext):
    """A forward that computes nothing extra: every call goes to its backend and its place is noted.

    Learns the model's :class:`Layout` (kind and layer of each call, heads per kind), so later captures
    choose layers, heads and kinds before their forward.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model, CaptureOptions())
        self.seen: list[tuple[Site, int, int, int]] = []  # site, module id, call index, heads

    def attention(self, module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        """Note the call's place and run the backend (or the enclosing capture) unchanged."""
        backend = kwargs.pop("_backend")
        kwargs.pop("_original", None)
        self.calls += 1
        mid = id(module)
        index = self._counts.get(mid, 0)
        self._counts[mid] = index + 1
        self.seen.append((self.site(module), mid, index, int(query.shape[1])))
        return backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)

    def layout(self) -> Layout | None:
        """The layout of the calls seen (None if there were none); layers ordered as :meth:`stacked` does."""
        if not self.seen:
            return None
        by_kind: dict[str, list[tuple[Site, int, int, int]]] = {}
        for entry in self.seen:
            by_kind.setdefault(entry[0].kind, []).append(entry)
        slots: dict[tuple[int, int], tuple[str, int]] = {}
        totals: dict[str, tuple[int, int]] = {}
        for kind in sorted(by_kind, key=_KIND_ORDER.index):
            entries = sorted(by_kind[kind], key=lambda e: (e[0].order, e[0].name, e[2]))
            for layer, (_, mid, index, _) in enumerate(entries):
                slots[(mid, index)] = (kind, layer)
            totals[kind] = (len(entries), entries[0][3])
        return Layout(slots, totals)
