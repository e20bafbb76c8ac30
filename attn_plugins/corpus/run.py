"""Corpus runs: explain a JSON Lines file of texts in batches, write results as they go, stop and resume safely.

``engine="local"`` explains in this process; ``engine="ray"`` reads the input with Ray Data and explains on a
pool of Ray workers (an existing cluster, or a local one started for the run), each loading the model
itself and writing its own shards. Both engines write the same directory (see :mod:`.shards`), so a run
started with one resumes with the other and gives the same results. An example that fails is recorded with
its error and the run goes on; :class:`~attn_plugins.errors.CorpusError` reports the failures at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..capture.oom import BatchSplitWarning, SplitLog
from ..errors import CorpusError, InputError
from .shards import (
    SHARD_FORMATS,
    finish_manifest,
    load_errors,
    load_results,
    prepare,
    read_manifest,
    record_name,
    verify_results,
    write_atomic,
)
from .source import ModelSource, json_safe
from .texts import Example, check_input, input_location, read_texts
from .worker import CorpusWorker, WorkerSpec, check_truncation, explain_batch, word_scores

__all__ = [
    "CorpusWorker",
    "Example",
    "WorkerSpec",
    "explain_batch",
    "load_errors",
    "load_results",
    "read_texts",
    "record_name",
    "run_corpus",
    "word_scores",
    "write_atomic",
]

# How a run with no method named is identified: explain.defaults picks the method per model.
DEFAULT_METHOD = "default"


# ---------------------------------------------------------------------------- what identifies a run
def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(model: Any, tokenizer: Any, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run of a model object: model class, config and weights digests, vocabulary, method, options."""
    from ..explain.targets import unwrap

    hf, tok, _ = unwrap(model, tokenizer)
    config = getattr(hf, "config", None)
    # Where the model was loaded from is not what it is: a model object and its saved directory are one model.
    settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"} if config is not None else None
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in hf.state_dict().items():
            # Name, shape and a float64 sum per tensor: cheap, and any retrained or swapped weight shows.
            h.update(f"{name}{tuple(p.shape)}{float(p.double().sum()):.10e}".encode())
    vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else {}
    return {
        "model_class": type(hf).__name__,
        "config": _digest(json.dumps(json_safe(settings), sort_keys=True).encode()) if settings is not None else None,
        "weights": h.hexdigest()[:16],
        "tokenizer": _digest(json.dumps(sorted(vocab.items())).encode()),
        "method": method,
        "options": json_safe(options),
    }


def run_identity(source: ModelSource, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``run``: named models by their files or hub revision, objects by their weights."""
    if source.name is None:
        return fingerprint(source.model, source.tokenizer, method, options)
    return {**source.identity(), "method": method, "options": json_safe(options)}


def resume_identity(out: Path, source: ModelSource, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The identity a run is resumed under when its model is given another way than it was started with.

    A run started from a model object is identified by its weights: a model directory resuming it is loaded
    and fingerprinted the same way, so the same model goes on and another is refused by what differs. A
    run started from a directory is identified by its files, which a model object cannot be checked against.
    """
    run = run_identity(source, method, options)
    old = (read_manifest(out) or {}).get("run") if out.is_dir() else None
    if not isinstance(old, dict) or set(old) == set(run):
        return run
    if "weights" in old and source.digest is not None:
        model, tokenizer = source.load()
        return fingerprint(model, tokenizer, method, options)
    if "model_dir" in old and source.name is None:
        raise InputError(
            f"{out} was started from the model directory with digest {old['model_dir']}; resume it with that "
            "directory (a model object cannot be checked against the directory's files)"
        )
    return run


# ---------------------------------------------------------------------------- the run
def _batches(items: Sequence[Example], size: int) -> Iterator[list[Example]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def run_corpus(
    model: Any,
    tokenizer: Any,
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str | None = None,
    batch_size: int = 8,
    engine: str = "local",
    resume: bool = True,
    *,
    save_records: bool = True,
    record_dtype: str | None = None,
    truncation: bool = False,
    shard_format: str = "jsonl",
    shard_size: int = 64,
    num_workers: int = 2,
    ray_address: str | None = None,
    num_gpus_per_worker: float = 0,
    task_model: str | None = None,
    progress: bool = True,
    **explain_options: Any,
) -> dict[str, Any]:
    """Explain every text of ``input_path`` into ``out_dir``; finished examples are skipped on resume.

    ``method=None`` explains with the most faithful method that supports the model (the faithfulness
    benchmark's ranking, :mod:`attn_plugins.explain.defaults`); each row names the method used.
    ``model`` is a model object (with its ``tokenizer``) or a local path / hub id (``tokenizer=None``): a
    named model is loaded by whoever explains, so Ray workers load it themselves. ``explain_options`` go to
    :class:`~attn_plugins.explain.AttentionExplainer` (``task``, ``target``, ``reference``, method options);
    ``truncation=True`` cuts texts longer than the model's limit (the row and record say so).
    ``engine="ray"`` connects to ``ray_address`` (or ``RAY_ADDRESS``), else starts a local cluster of
    ``num_workers`` CPUs. Shards of up to ``shard_size`` examples are written as ``jsonl`` or ``parquet``.
    Returns a summary (counts, seconds, examples per second); raises :class:`~attn_plugins.errors.CorpusError`
    after the run when examples failed (each failure is in ``out_dir/errors/``; resuming retries them).
    """
    from tqdm.auto import tqdm

    if engine not in ("local", "ray"):
        raise InputError(f"engine must be 'local' or 'ray', not {engine!r}")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size), ("num_workers", num_workers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if record_dtype not in (None, "float16", "bfloat16", "float32"):
        raise InputError(f"record_dtype must be float16, bfloat16 or float32, not {record_dtype!r}")
    if shard_format not in SHARD_FORMATS:
        raise InputError(f"shard_format must be jsonl or parquet, not {shard_format!r}")
    gpus = num_gpus_per_worker
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0:
        raise InputError(f"num_gpus_per_worker must be a finite number of GPUs >= 0 per Ray worker, got {gpus!r}")
    if gpus and engine != "ray":
        raise InputError("num_gpus_per_worker is a non-negative number of GPUs per Ray worker (engine='ray')")
    if engine == "ray":
        from .ray import check_token, cluster_address, probe

        check_input(input_path)  # Ray reads it later, in a task: a missing file or a folder is refused here
        address = cluster_address(ray_address)
        if address not in (None, "auto"):
            probe(address)  # an unreachable cluster is one line now, not after minutes of retries
            check_token(address)  # a cluster that refuses this driver's token: at once, not after 25 s
    if truncation:
        check_truncation()  # here, not first in each worker
    source = ModelSource.of(model, tokenizer, task=task_model)
    out = Path(out_dir).expanduser().resolve()
    options = {**explain_options, "save_records": save_records, "record_dtype": record_dtype}
    examples = read_texts(input_path) if engine == "local" else []  # bad input refused before anything is written
    # The default method is chosen from the model where it is loaded; the run is identified as "default" and each
    # row names the method that explained it.
    named = method or DEFAULT_METHOD
    identity = resume_identity(out, source, named, options) if resume else run_identity(source, named, options)
    manifest = prepare(out, identity, resume)
    rows, repaired = verify_results(out, repair=True)
    done = {r["id"]: r.get("text_sha1") for r in rows}
    spec = WorkerSpec(
        source=source,
        method=method,
        options=dict(explain_options),
        out_dir=str(out),
        batch_size=batch_size,
        truncation=truncation,
        save_records=save_records,
        record_dtype=record_dtype,
        shard_format=shard_format,
    )
    start = time.perf_counter()
    if engine == "local":
        for e in examples:
            if e.id in done and done[e.id] != e.text_sha1:
                raise InputError(f"{input_path}:{e.line}: the text of id {e.id!r} changed since it was explained")
        pending = [e for e in examples if e.id not in done]
        total = len(examples)
        stream: Iterator[dict[str, Any]] = _local(spec, pending, shard_size)
    else:
        from .ray import ray_engine

        total, pending_count, stream = ray_engine(
            spec, input_location(input_path), done, shard_size, num_workers, ray_address, num_gpus_per_worker
        )
        pending = [None] * pending_count
    written, failed, shards, spans = 0, [], set(), []
    splits = SplitLog()  # batches split for lack of device memory, over every worker
    bar = tqdm(total=total, initial=total - len(pending), unit="ex", disable=not progress)
    try:
        for result in stream:
            written += len(result["ids"])
            failed += result["errors"]
            if result["shard"]:
                shards.add(result["shard"])
            spans.append((result["started"], result["ended"], result.get("busy", result["ended"] - result["started"])))
            splits.batches_split += result.get("batches_split", 0)
            if result.get("smallest_batch"):
                splits.fitted(result["smallest_batch"])
            bar.update(len(result["ids"]) + len(result["errors"]))
            bar.set_postfix_str(f"{written / max(time.perf_counter() - start, 1e-9):.2f} ex/s")
    finally:
        bar.close()
        close = getattr(stream, "close", None)
        if close is not None:  # a stopped run shuts its engine down now, not whenever it is collected
            close()
    seconds = time.perf_counter() - start
    failed.sort(key=lambda e: (e.get("line") or 0, e["id"]))
    summary = {
        "input": os.fspath(input_path),
        "out_dir": os.fspath(out),
        "engine": engine,
        "method": method or DEFAULT_METHOD,
        "total": total,
        "skipped": total - len(pending),
        "explained": written,
        "failed": len(failed),
        "repaired": len(repaired),
        "shards": len(shards),
        "seconds": round(seconds, 4),
        "examples_per_second": round(written / seconds, 4) if written and seconds > 0 else 0.0,
        **splits.to_dict(),
    }
    if spans:
        # From the first batch's start to the last batch's end in the workers: without start-up (imports,
        # model loading, connecting to Ray), the rate the workers keep up.
        span = max(e for _, e, _ in spans) - min(s for s, _, _ in spans)
        busy = sum(b for _, _, b in spans)
        summary["explaining_seconds"] = round(span, 4)
        summary["explaining_examples_per_second"] = round(written / span, 4) if written and span > 0 else 0.0
        # Seconds the workers spent on batches, added up: examples / this is the rate of one worker.
        summary["worker_seconds"] = round(busy, 4)
    finish_manifest(
        out,
        manifest,
        {
            "examples": len(done) + written,
            "failed": len(failed),
            "last_run": {k: summary[k] for k in ("engine", "explained", "failed", "seconds")}
            | splits.to_dict()
            | {"truncation": truncation, "shard_format": shard_format},
        },
    )
    if splits.batches_split:
        warnings.warn(splits.message(), BatchSplitWarning, stacklevel=2)
    if repaired:
        summary["repairs"] = repaired
    if failed:
        first = failed[0]
        raise CorpusError(
            f"{len(failed)} of {len(pending)} examples failed ({out}/errors/ has each; resume the run to retry "
            f"them); first: {input_path}:{first['line']} id {first['id']!r}: {first['error']}",
            summary=summary,
            failures=failed,
        )
    return summary


def _local(spec: WorkerSpec, pending: list[Example], shard_size: int) -> Iterator[dict[str, Any]]:
    if not pending:
        return
    worker = CorpusWorker(spec)
    for chunk in _batches(pending, shard_size):
        yield worker.process(chunk)
