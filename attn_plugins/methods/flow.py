"""Attention flow (Abnar & Zuidema 2020): maximum flow from an output token to each input token."""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import maximum_flow

from ..record import AttentionRecord, reduce_axis
from .base import Method, attention, bottom_up, heads_of, square, to_numpy
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

    def maps(
        self, record: AttentionRecord, kind: str, layers: list[int], heads: list[int], head_reduce: str
    ) -> np.ndarray:
        """[L, N, N] residual-mixed, head-combined maps of the chosen layers, first layer first."""
        att = heads_of(attention(record, kind, bottom_up(record, kind, layers)), heads)
        square(att, kind, self.name)
        return to_numpy(residual_mix(reduce_axis(att, head_reduce)))

    def matrix(
        self, record: AttentionRecord, *, kind: str, layers: list[int], heads: list[int], head_reduce: str
    ) -> np.ndarray:
        """[N, N] flow from every output token (rows) to every input token (columns)."""
        maps = self.maps(record, kind, layers, heads, head_reduce)
        return flow_rows(maps, np.arange(maps.shape[-1]))

    def rows(
        self,
        record: AttentionRecord,
        rows: np.ndarray,
        *,
        kind: str,
        layers: list[int],
        heads: list[int],
        head_reduce: str,
    ) -> np.ndarray:
        """Flow for the rows asked for only: each row is its own set of max-flow problems."""
        return flow_rows(self.maps(record, kind, layers, heads, head_reduce), rows)
