"""One worker of a corpus run: builds the explainer once, explains batches of examples into rows and records,
and writes them as its own shards. The local engine runs one in its process; the Ray engine one per actor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..capture.oom import split_scope
from ..errors import AttnPluginsError, InputError, PluginError
from ..record import AttentionRecord
from .shards import ShardWriter, finite_or_none
from .source import ModelSource
from .texts import Example, text_sha1

__all__ = [
    "CorpusWorker",
    "WorkerSpec",
    "check_truncation",
    "error_text",
    "explain_batch",
    "explain_isolated",
    "word_scores",
]


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

    The explainer captures the texts together (one padded forward per ``batch_size``; a relevance or
    gradient method: one forward and one backward of the sum of the texts' targets), and alone only the
    examples with several explained outputs (generated tokens, QA start and end).
    """
    specs = explainer.resolve_all([e.text for e in examples], names=[None] * len(examples))
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
    method: str | None  # None: the most faithful method that supports the model (explain.defaults)
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
        # Batches split for lack of device memory are counted here and reported once by the run.
        with split_scope(warn=False) as splits:
            for i in range(0, len(examples), self.spec.batch_size):
                d, e = explain_isolated(self.explainer, examples[i : i + self.spec.batch_size])
                done += [(row, self.record_bytes(record)) for row, record in d]
                errors += e
        written = self.writer.write(done, errors)
        return {**written, **splits.to_dict(), "started": started, "ended": time.time()}
