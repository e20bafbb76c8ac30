"""The Ray engine of corpus runs: a pool of actors explains batches; the driver writes what they return."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .run import Example, explain_batch, record_bytes


class RayExplainer:
    """A Ray Data actor: builds the explainer once (the model arrives once from the object store), then explains batches."""

    def __init__(
        self, shared: list[Any], method: str, options: dict[str, Any], keep: bool, record_dtype: str | None
    ) -> None:
        import ray

        from ..explain.explainer import AttentionExplainer

        model, tokenizer = ray.get(shared[0])  # wrapped in a list so Ray hands over the reference, not a copy
        torch.set_num_threads(1)  # one CPU per actor: Ray schedules the parallelism
        self.explainer = AttentionExplainer(model, tokenizer, method=method, **options)
        self.keep = keep
        self.record_dtype = record_dtype

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain one Ray batch of ``id``/``text``/``line`` columns into ``row`` (JSON) and ``record`` (bytes)."""
        examples = [Example(str(i), str(t), int(n)) for i, t, n in zip(batch["id"], batch["text"], batch["line"])]
        done = explain_batch(self.explainer, examples)
        return {
            "row": np.array([json.dumps(row) for row, _ in done], dtype=object),
            "record": np.array([record_bytes(r, self.keep, self.record_dtype) for _, r in done], dtype=object),
        }


def ray_engine(
    model: Any,
    tokenizer: Any,
    method: str,
    options: dict[str, Any],
    pending: list[Example],
    batch_size: int,
    num_workers: int,
    keep: bool,
    record_dtype: str | None,
) -> Iterator[list[tuple[dict, bytes | None]]]:
    """Explain ``pending`` on a Ray pool of ``num_workers`` actors; yields batches of (row, record bytes)."""
    try:
        import ray
    except ImportError:
        raise InputError("engine='ray' needs Ray: pip install 'attn-plugins[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=max(num_workers, 1), include_dashboard=False, log_to_driver=False)
    try:
        shared = [ray.put((model, tokenizer))]
        ds = ray.data.from_items([{"id": e.id, "text": e.text, "line": e.line} for e in pending])
        ds = ds.map_batches(
            RayExplainer,
            fn_constructor_kwargs={
                "shared": shared,
                "method": method,
                "options": options,
                "keep": keep,
                "record_dtype": record_dtype,
            },
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=num_workers,
            num_cpus=1,
        )
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield [(json.loads(r), None if b is None else bytes(b)) for r, b in zip(out["row"], out["record"])]
    finally:
        if started:  # a cluster this run started is not left running; one the caller started stays theirs
            ray.shutdown()
