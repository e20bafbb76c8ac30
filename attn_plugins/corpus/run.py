"""Corpus runs: explain a JSON Lines file of texts in batches, write results as they go, stop and resume safely.

Layout of ``out_dir``:

* ``manifest.json`` - what the run is (model, tokenizer, method and options fingerprints); a resumed run
  must match it, so results of two different setups never mix in one directory;
* ``results.jsonl`` - one line per finished example (id, tokens, per-token scores, per-word scores, the
  record's file). It doubles as the manifest of done ids: a batch's lines are appended with one
  ``write`` and an ``fsync`` once its records are on disk, so a line exists only for a complete example.
  A run killed during that write leaves at most one partial last line, which the next run cuts off and
  redoes;
* ``records/<hash of id>.attn`` - the AttentionRecord of each example (safetensors, atomic writes).

``engine="local"`` explains in this process; ``engine="ray"`` sends batches through Ray Data to a pool of
actors that each build the explainer (and receive the model) once, while this process alone writes the
results, so both engines produce the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord

RESULTS = "results.jsonl"
MANIFEST = "manifest.json"
RECORDS = "records"
FORMAT_VERSION = 1


@dataclass
class Example:
    """One text of the input file: its id (given, or the line number), text and line number."""

    id: str
    text: str
    line: int


# ---------------------------------------------------------------------------- input
def read_texts(path: str | os.PathLike) -> list[Example]:
    """Read ``{"text": ..., "id": ...}`` lines (id optional: the line number); bad lines raise InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    examples: list[Example] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue  # blank lines (a trailing newline) carry nothing
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f'{path}:{n}: expected an object like {{"text": "..."}}, got {type(obj).__name__}')
            text = obj.get("text")
            if not isinstance(text, str):
                raise InputError(f'{path}:{n}: needs a "text" string')
            if not text.strip():
                raise InputError(f"{path}:{n}: the text is empty; there is nothing to explain")
            raw_id = obj.get("id", n)
            if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
                raise InputError(f'{path}:{n}: "id" must be a string or an integer')
            key = str(raw_id)
            if key in seen:
                raise InputError(f"{path}:{n}: id {key!r} was already used on line {seen[key]}")
            seen[key] = n
            examples.append(Example(key, text, n))
    if not examples:
        raise InputError(f"{path}: holds no texts")
    return examples


# ---------------------------------------------------------------------------- explaining one batch
def record_name(example_id: str) -> str:
    """The record file of an example: a hash of its id, so any id makes a safe, stable file name."""
    return f"{RECORDS}/{hashlib.sha1(example_id.encode('utf-8')).hexdigest()[:20]}.attn"


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
    """The results.jsonl line of one example."""
    keys = spec.keys
    tokens = list(record.tokens)[keys]
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
        "text_sha1": hashlib.sha1(example.text.encode("utf-8")).hexdigest(),
        "text": example.text,
        "method": method,
        "task": spec.task,
        "label": spec.label,
        "output_names": spec.output_names,
        "tokens": tokens,
        "scores": np.asarray(values, dtype=float).tolist(),
        "words": words,
        "word_scores": wscores.tolist(),
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


# ---------------------------------------------------------------------------- the output directory
def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(model: Any, tokenizer: Any, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run: model class, config and weights digests, tokenizer vocabulary, method, options."""
    from ..explain.targets import unwrap

    hf, tok, _ = unwrap(model, tokenizer)
    config = getattr(hf, "config", None)
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in hf.state_dict().items():
            # Name, shape and a float64 sum per tensor: cheap, and any retrained or swapped weight shows.
            h.update(f"{name}{tuple(p.shape)}{float(p.double().sum()):.10e}".encode())
    vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else {}
    return {
        "format": FORMAT_VERSION,
        "model_class": type(hf).__name__,
        "config": _digest(config.to_json_string(use_diff=False).encode()) if config is not None else None,
        "weights": h.hexdigest()[:16],
        "tokenizer": _digest(json.dumps(sorted(vocab.items())).encode()),
        "method": method,
        "options": json.loads(json.dumps(options, sort_keys=True, default=repr)),
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _append(path: Path, lines: list[str]) -> None:
    """Append whole lines with one write and an fsync: readers see complete lines or (after a crash) one partial."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def load_results(out_dir: str | os.PathLike, repair: bool = False) -> list[dict[str, Any]]:
    """The finished rows of ``out_dir/results.jsonl``; a partial last line is cut off when ``repair``."""
    path = Path(out_dir) / RESULTS
    if not path.exists():
        return []
    data = path.read_bytes()
    rows = []
    end = data.rfind(b"\n") + 1  # everything after the last newline is an interrupted write
    if end < len(data):
        if not repair:
            raise InputError(f"{path}: the last line is incomplete (an interrupted run); resume the run to repair it")
        with open(path, "r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    for n, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{n}: corrupted results line ({exc.msg}); it was not written by this tool"
            ) from None
        if not isinstance(row, dict) or "id" not in row:
            raise InputError(f"{path}:{n}: a results line without an id")
        rows.append(row)
    return rows


def _prepare(out_dir: Path, finger: dict[str, Any], resume: bool) -> dict[str, dict[str, Any]]:
    """Check or write the manifest and return the finished rows by id."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RECORDS).mkdir(exist_ok=True)
    manifest = out_dir / MANIFEST
    has_results = (out_dir / RESULTS).exists()
    if manifest.exists():
        if not resume and has_results:
            raise InputError(
                f"{out_dir} already holds results; resume the run, or choose an empty directory "
                "(nothing is deleted on your behalf)"
            )
        try:
            old = json.loads(manifest.read_text("utf-8"))
        except json.JSONDecodeError:
            raise InputError(f"{manifest}: not a run manifest (invalid JSON)") from None
        differs = [k for k in finger if old.get("run", {}).get(k) != finger[k]]
        if differs and has_results:
            raise InputError(
                f"{out_dir} holds results of a different run ({', '.join(differs)} differ); "
                "resume only with the same model, tokenizer, method and options, or choose another directory"
            )
    elif has_results:
        raise InputError(f"{out_dir} holds {RESULTS} but no {MANIFEST}; it was not written by this tool")
    write_atomic(manifest, json.dumps({"run": finger}, indent=2).encode("utf-8"))
    return {str(r["id"]): r for r in load_results(out_dir, repair=True)}


# ---------------------------------------------------------------------------- engines
def _batches(items: Sequence[Example], size: int) -> Iterator[list[Example]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def record_bytes(record: AttentionRecord, keep: bool, dtype: str | None) -> bytes | None:
    """A record serialized for its file (cast to ``dtype`` if given), or None when records are not kept."""
    from ..record.storage import to_bytes

    if not keep:
        return None
    return to_bytes(record.to(getattr(torch, dtype)) if dtype else record)


def _local(
    explainer: Any, pending: list[Example], batch_size: int, keep: bool, dtype: str | None
) -> Iterator[list[tuple[dict, bytes | None]]]:
    for batch in _batches(pending, batch_size):
        yield [(row, record_bytes(record, keep, dtype)) for row, record in explain_batch(explainer, batch)]


# ---------------------------------------------------------------------------- the run
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
    num_workers: int = 2,
    progress: bool = True,
    **explain_options: Any,
) -> dict[str, Any]:
    """Explain every text of ``input_path`` into ``out_dir``; finished examples are skipped on resume.

    ``explain_options`` go to :class:`~attn_plugins.explain.AttentionExplainer` (``task``, ``target``,
    ``reference``, ``max_new_tokens``, method options). ``record_dtype="float16"`` halves the record files.
    Returns a summary: counts, seconds and examples per second of this run.
    """
    from tqdm.auto import tqdm

    if engine not in ("local", "ray"):
        raise InputError(f"engine must be 'local' or 'ray', not {engine!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if record_dtype not in (None, "float16", "bfloat16", "float32"):
        raise InputError(f"record_dtype must be float16, bfloat16 or float32, not {record_dtype!r}")
    examples = read_texts(input_path)
    out = Path(out_dir)
    options = {**explain_options, "save_records": save_records, "record_dtype": record_dtype}
    finger = fingerprint(model, tokenizer, method, options)
    done = _prepare(out, finger, resume)
    by_id = {e.id: e for e in examples}
    for key, row in done.items():
        example = by_id.get(key)
        if example is not None and row.get("text_sha1") != hashlib.sha1(example.text.encode("utf-8")).hexdigest():
            raise InputError(f"{input_path}:{example.line}: the text of id {key!r} changed since it was explained")
    pending = [e for e in examples if e.id not in done]
    start = time.perf_counter()
    written = 0
    bar = tqdm(total=len(examples), initial=len(examples) - len(pending), unit="ex", disable=not progress)
    results: Iterator[list[tuple[dict, bytes | None]]] = iter(())
    try:
        if engine == "local" and pending:
            from ..explain.explainer import AttentionExplainer

            explainer = AttentionExplainer(model, tokenizer, method=method, **explain_options)
            results = _local(explainer, pending, batch_size, save_records, record_dtype)
        elif pending:
            from .ray import ray_engine

            results = ray_engine(
                model, tokenizer, method, explain_options, pending, batch_size, num_workers, save_records, record_dtype
            )
        for batch in results:
            lines = []
            for row, blob in batch:
                row["record"] = None
                if blob is not None:
                    row["record"] = record_name(row["id"])
                    write_atomic(out / row["record"], blob)
                lines.append(json.dumps(row, ensure_ascii=False))
            # Records first, then the lines that mark their examples done.
            _append(out / RESULTS, lines)
            written += len(lines)
            bar.update(len(lines))
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"{written / max(elapsed, 1e-9):.2f} ex/s")
    finally:
        bar.close()
        close = getattr(results, "close", None)
        if close is not None:  # a stopped run shuts its engine down now, not whenever it is collected
            close()
    seconds = time.perf_counter() - start
    return {
        "input": os.fspath(input_path),
        "out_dir": os.fspath(out),
        "engine": engine,
        "method": method,
        "total": len(examples),
        "skipped": len(examples) - len(pending),
        "explained": written,
        "seconds": round(seconds, 4),
        "examples_per_second": round(written / seconds, 4) if written and seconds > 0 else 0.0,
        "results": os.fspath(out / RESULTS),
    }
