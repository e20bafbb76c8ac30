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
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AttnPluginsError, CorpusError, InputError, PluginError
from ..record import AttentionRecord
from .shards import (
    SHARD_FORMATS,
    ShardWriter,
    finish_manifest,
    finite_or_none,
    load_errors,
    load_results,
    prepare,
    read_manifest,
    record_name,
    verify_results,
    write_atomic,
)
from .source import ModelSource, json_safe
from .texts import Example, input_location, read_texts, text_sha1

__all__ = [
    "Example",
    "explain_batch",
    "load_errors",
    "load_results",
    "read_texts",
    "record_name",
    "run_corpus",
    "word_scores",
    "write_atomic",
]

FORMAT_VERSION = 2


# ---------------------------------------------------------------------------- explaining one batch
def word_scores(
    scores: np.ndarray,
    tokens: Sequence[str],
    word_ids: Sequence[int | None] | None,
    offsets: Sequence[tuple[int, int]] | None,
    text: str | None,
    special: Sequence[bool] | None,
) -> tuple[list[str], np.ndarray]:
    """Token scores summed into words (special tokens left out); scores [tokens] or [tokens, outputs]."""
    n = len(tokens)
    ids = np.array([-1 if w is None else int(w) for w in word_ids] if word_ids is not None else range(n))
    keep = ids >= 0
    if special is not None:
        keep &= ~np.asarray(special, dtype=bool)
    if not keep.any():
        return [], np.zeros((0, *scores.shape[1:]))
    idx = np.nonzero(keep)[0]
    # A word is a run of consecutive kept tokens with the same word id.
    starts = np.ones(len(idx), dtype=bool)
    starts[1:] = (ids[idx][1:] != ids[idx][:-1]) | (np.diff(idx) > 1)
    unit = np.cumsum(starts) - 1
    summed = np.zeros((int(unit[-1]) + 1, *scores.shape[1:]))
    np.add.at(summed, unit, scores[idx])
    words = []
    firsts = idx[starts]
    lasts = np.append(idx[np.nonzero(starts)[0][1:] - 1], idx[-1])
    for first, last in zip(firsts, lasts):  # one string per word
        if offsets is not None and text is not None:
            words.append(text[offsets[first][0] : offsets[last][1]])
        else:
            pieces = [t[2:] if t.startswith("##") else t.lstrip("Ġ▁") for t in tokens[first : last + 1]]
            words.append("".join(pieces))
    return words, summed


def _sliced(seq: Sequence[Any] | None, keys: slice) -> list[Any] | None:
    return None if seq is None else list(seq)[keys]


def _row(example: Example, spec: Any, values: np.ndarray, record: AttentionRecord, method: str) -> dict[str, Any]:
    """The results row of one example; a method that scores the wrong number of tokens is refused here."""
    keys = spec.keys
    tokens = list(record.tokens)[keys]
    values = np.asarray(values, dtype=float)
    if values.ndim == 0 or values.shape[0] != len(tokens):
        got = "a scalar" if values.ndim == 0 else f"{values.shape[0]} scores"
        raise PluginError(f"method {method!r} gave {got} for {len(tokens)} tokens")
    words, wscores = word_scores(
        values,
        tokens,
        _sliced(record.word_ids, keys),
        _sliced(record.offsets, keys),
        record.text if record.text is not None else spec.text,
        _sliced(record.special_tokens_mask, keys),
    )
    return {
        "id": example.id,
        "line": example.line,
        "text_sha1": text_sha1(example.text),
        "text": example.text,
        "method": method,
        "task": spec.task,
        "label": None if spec.label is None else str(spec.label),
        "output_names": None if spec.output_names is None else [str(n) for n in spec.output_names],
        "tokens": tokens,
        "scores": finite_or_none(values),
        "words": words,
        "word_scores": finite_or_none(wscores),
        "truncated": bool(record.meta.get("truncated", False)),
    }


def explain_batch(explainer: Any, examples: Sequence[Example]) -> list[tuple[dict[str, Any], AttentionRecord]]:
    """Explain a batch with an :class:`~attn_plugins.explain.AttentionExplainer`: (results row, record) per example.

    The explainer captures texts its method reads without gradients together (one padded forward per
    ``batch_size``), and each other example alone (gradients are specific to one output).
    """
    specs = [explainer.resolve(e.text) for e in examples]
    return [
        (_row(example, spec, np.asarray(values), record, explainer.method_name), record)
        for example, spec, (values, record) in zip(examples, specs, explainer.scores_batch(specs))
    ]


def error_text(exc: BaseException) -> str:
    """One line for a failed example: the package's own messages as they are, others with their type."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return first if isinstance(exc, AttnPluginsError) else f"{type(exc).__name__}: {first}"


def explain_isolated(
    explainer: Any, examples: Sequence[Example]
) -> tuple[list[tuple[dict[str, Any], AttentionRecord]], list[dict[str, Any]]]:
    """Explain a batch; when it fails, each example alone, so one bad example costs only its own row."""
    try:
        return explain_batch(explainer, examples), []
    except Exception as exc:
        if len(examples) == 1:
            e = examples[0]
            return [], [{"id": e.id, "line": e.line, "text_sha1": e.text_sha1, "error": error_text(exc)}]
    done, errors = [], []
    for example in examples:
        d, err = explain_isolated(explainer, [example])
        done += d
        errors += err
    return done, errors


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


def check_truncation() -> None:
    """Refuse truncation=True while the explainer cannot truncate (it would hand the option to the method)."""
    import inspect

    from ..explain.explainer import AttentionExplainer

    if "truncation" not in inspect.signature(AttentionExplainer).parameters:
        raise InputError("truncation needs an AttentionExplainer that accepts truncation= (not in this version)")


# ---------------------------------------------------------------------------- one worker
@dataclass
class WorkerSpec:
    """Everything a worker (this process, or one Ray actor) needs to explain batches and write shards."""

    source: ModelSource
    method: str
    options: dict[str, Any]
    out_dir: str
    batch_size: int = 8
    truncation: bool = False
    save_records: bool = True
    record_dtype: str | None = None
    shard_format: str = "jsonl"
    device: str | None = None
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CorpusWorker:
    """Builds the explainer once, then explains batches of examples into shards of its own."""

    def __init__(self, spec: WorkerSpec) -> None:
        from ..explain.explainer import AttentionExplainer

        if spec.threads:
            torch.set_num_threads(spec.threads)  # one CPU per Ray worker: Ray schedules the parallelism
        started = time.perf_counter()
        model, tokenizer = spec.source.load()
        if spec.device:
            model = model.to(spec.device)
        options = dict(spec.options)
        if spec.truncation:
            check_truncation()
            options["truncation"] = True
        self.explainer = AttentionExplainer(model, tokenizer, method=spec.method, **options)
        self.explainer.truncation = spec.truncation  # the batched capture reads it too
        self.spec = spec
        self.writer = ShardWriter(spec.out_dir, spec.shard_format)
        self.load_seconds = time.perf_counter() - started

    def record_bytes(self, record: AttentionRecord) -> bytes | None:
        """A record serialized for its file (cast to the run's dtype), or None when records are not kept."""
        from ..record.storage import to_bytes

        if not self.spec.save_records:
            return None
        dtype = self.spec.record_dtype
        return to_bytes(record.to(getattr(torch, dtype)) if dtype else record)

    def process(self, examples: Sequence[Example]) -> dict[str, Any]:
        """Explain ``examples`` (in batches of the spec's size) and write them as one shard; returns what was done."""
        started = time.time()
        done, errors = [], []
        for i in range(0, len(examples), self.spec.batch_size):
            d, e = explain_isolated(self.explainer, examples[i : i + self.spec.batch_size])
            done += [(row, self.record_bytes(record)) for row, record in d]
            errors += e
        written = self.writer.write(done, errors)
        return {**written, "started": started, "ended": time.time()}


# ---------------------------------------------------------------------------- the run
def _batches(items: Sequence[Example], size: int) -> Iterator[list[Example]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def run_corpus(
    model: Any,
    tokenizer: Any,
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str = "rollout",
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
    if num_gpus_per_worker < 0 or (num_gpus_per_worker and engine != "ray"):
        raise InputError("num_gpus_per_worker is a non-negative number of GPUs per Ray worker (engine='ray')")
    if engine == "ray":
        from .ray import cluster_address, probe

        address = cluster_address(ray_address)
        if address not in (None, "auto"):
            probe(address)  # an unreachable cluster is one line now, not after minutes of retries
    if truncation:
        check_truncation()  # here, not first in each worker
    source = ModelSource.of(model, tokenizer, task=task_model)
    out = Path(out_dir).expanduser().resolve()
    options = {**explain_options, "save_records": save_records, "record_dtype": record_dtype}
    examples = read_texts(input_path) if engine == "local" else []  # bad input refused before anything is written
    manifest = prepare(
        out, resume_identity(out, source, method, options) if resume else run_identity(source, method, options), resume
    )
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
    bar = tqdm(total=total, initial=total - len(pending), unit="ex", disable=not progress)
    try:
        for result in stream:
            written += len(result["ids"])
            failed += result["errors"]
            if result["shard"]:
                shards.add(result["shard"])
            spans.append((result["started"], result["ended"], result.get("busy", result["ended"] - result["started"])))
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
        "method": method,
        "total": total,
        "skipped": total - len(pending),
        "explained": written,
        "failed": len(failed),
        "repaired": len(repaired),
        "shards": len(shards),
        "seconds": round(seconds, 4),
        "examples_per_second": round(written / seconds, 4) if written and seconds > 0 else 0.0,
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
            | {"truncation": truncation, "shard_format": shard_format},
        },
    )
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
