"""Run benchmarks with a fixed number of torch threads, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import InputError


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block.

    Benchmarks default to one: these models are tiny, and on a shared CPU several processes each
    spinning two OpenMP threads ran about five times slower than with one thread each.
    """
    if n < 1:
        raise InputError(f"threads must be at least 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
