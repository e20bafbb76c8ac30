"""Attention flow (Abnar & Zuidema 2020): maximum flow from an output token to each input token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse
import torch
from scipy.sparse.csgraph import maximum_flow

from ..errors import InputError
from ..record import AttentionRecord
from .base import Method, Position, attention, generated_rows, pick_layers, reduce_heads, square, to_numpy
from .rollout import residual_mix

# scipy's maximum flow works on integer capacities; weights in [0, 1] are scaled to this resolution.
_SCALE = 1 << 24


def layer_graph(maps: np.ndarray) -> scipy.sparse.csr_array:
    """The layered graph of [L, N, N] maps: node (l+1, i) → node (l, j) with capacity maps[l, i, j]."""
    n_layers, n, _ = maps.shape
    li, qi, kj = np.nonzero(maps > 0)
    src = (li + 1) * n + qi
    dst = li * n + kj
    cap = np.maximum(np.rint(maps[li, qi, kj] * _SCALE), 1).astype(np.int32)
    size = (n_layers + 1) * n
    return scipy.sparse.csr_array((cap, (src, dst)), shape=(size, size))


def flow_rows(maps: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Max-flow values from output tokens ``rows`` (top layer) to every input token, rows normalized to 1."""
    n_layers, n, _ = maps.shape
    graph = layer_graph(maps)
    out = np.zeros((len(rows), n))
    top = n_layers * n
    # One max-flow problem per (output, input) pair: flows do not decompose, so each pair is solved alone.
    for r, i in enumerate(rows):
        for j in range(n):
            out[r, j] = maximum_flow(graph, top + int(i), j).flow_value
    out /= _SCALE
    sums = out.sum(-1, keepdims=True)
    return out / np.where(sums > 0, sums, 1.0)


class Flow(Method):
    """Attention flow through the residual-mixed layer graph; rows are normalized to sum to 1."""

    name = "flow"
    kinds = ("self", "encoder", "decoder")
    description = "attention flow: maximum flow through the layer graph of 0.5·A + 0.5·I"

    def _maps(self, record: AttentionRecord, kind: str, layers: Sequence[int] | None, head_reduce: str) -> np.ndarray:
        att = attention(record, kind)
        square(att, kind, self.name)
        li = torch.tensor(sorted(pick_layers(att.shape[0], layers)))
        return to_numpy(residual_mix(reduce_heads(att.index_select(0, li), head_reduce)))

    def matrix(
        self,
        record: AttentionRecord,
        kind: str | None = None,
        layers: Sequence[int] | None = None,
        head_reduce: str = "mean",
    ) -> np.ndarray:
        """[N, N] flow from every output token (rows) to every input token (columns)."""
        kind = self.resolve_kind(record, kind)
        maps = self._maps(record, kind, layers, head_reduce)
        return flow_rows(maps, np.arange(maps.shape[-1]))

    def __call__(
        self,
        record: AttentionRecord,
        position: Position = "first",
        kind: str | None = None,
        **opts: Any,
    ) -> np.ndarray:
        """Flow for the chosen rows only: each row is its own set of max-flow problems."""
        kind = self.resolve_kind(record, kind)
        self.check_options(self.matrix, opts)
        maps = self._maps(record, kind, opts.get("layers"), opts.get("head_reduce", "mean"))
        n = maps.shape[-1]
        if position == "mean":
            return flow_rows(maps, np.arange(n)).mean(0)
        if isinstance(position, str):
            if position == "first":
                return flow_rows(maps, np.array([0]))[0]
            if position == "last":
                return flow_rows(maps, np.array([n - 1]))[0]
            if position == "generated":
                return flow_rows(maps, generated_rows(record, kind, n))
            raise InputError(
                f"position must be 'first', 'last', 'mean', 'generated' or a token index, not {position!r}"
            )
        if isinstance(position, (int, np.integer)):
            if not -n <= int(position) < n:
                raise InputError(f"position {position} out of range for {n} query tokens")
            return flow_rows(maps, np.array([int(position) % n]))[0]
        rows = [int(r) for r in position]
        for r in rows:
            if not -n <= r < n:
                raise InputError(f"position {r} out of range for {n} query tokens")
        return flow_rows(maps, np.array(rows) % n)
