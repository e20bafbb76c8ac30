"""The global view of a corpus run: per-word scores over all texts (mean, count, spread) in one ranking.

Texts of different lengths give explanations of different lengths, which shap's global plots cannot
stack; grouping by word instead gives one value per word. The ranking comes as a table and as a
one-dimensional ``shap.Explanation`` (values = the ranked statistic, feature names = words) that
``shap.plots.bar`` draws as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..results import Result, format_table, plain

RANK_BY = ("mean", "mean_abs", "sum", "count")
NORMALIZE = (None, "sum", "max")


@dataclass
class CorpusRanking(Result):
    """Per-word statistics over a corpus, sorted by ``by`` (largest first)."""

    words: list[str]
    mean: np.ndarray
    std: np.ndarray  # spread of a word's scores over its occurrences (population standard deviation)
    count: np.ndarray  # occurrences
    documents: np.ndarray  # texts the word occurs in
    total: np.ndarray  # sum of the word's scores
    mean_abs: np.ndarray
    by: str
    examples: int
    method: str | None = None

    def __len__(self) -> int:
        return len(self.words)

    @property
    def ranked(self) -> np.ndarray:
        """The statistic the ranking is sorted by."""
        return {"mean": self.mean, "mean_abs": self.mean_abs, "sum": self.total, "count": self.count}[self.by]

    def rows(self, top: int | None = None) -> list[dict[str, Any]]:
        """Rows ``{rank, word, mean, std, count, documents, sum}``, best first (the ``top`` first ones)."""
        n = len(self) if top is None else min(int(top), len(self))
        return [
            {
                "rank": i + 1,
                "word": self.words[i],
                "mean": float(self.mean[i]),
                "std": float(self.std[i]),
                "count": int(self.count[i]),
                "documents": int(self.documents[i]),
                "sum": float(self.total[i]),
            }
            for i in range(n)
        ]

    def to_frame(self, top: int | None = None) -> Any:
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows(top))

    def to_dict(self) -> dict[str, Any]:
        """The ranking statistic, the number of texts, the method and every word's row."""
        return plain({"by": self.by, "examples": self.examples, "method": self.method, "words": self.rows()})

    def __str__(self) -> str:
        return format_table(self.rows(20)) + (f"\n({len(self) - 20} more words)" if len(self) > 20 else "")

    def to_explanation(self, top: int | None = None) -> Any:
        """A one-dimensional ``shap.Explanation`` over words that ``shap.plots.bar`` draws."""
        from ..explain.explainer import feature_explanation

        n = len(self) if top is None else min(int(top), len(self))
        return feature_explanation(self.ranked[:n], self.words[:n])


def _rows(results: str | os.PathLike | Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        from .shards import LEGACY_RESULTS, load_results, read_shard

        path = Path(results)
        if path.is_dir():
            return load_results(path)
        if path.suffix in (".jsonl", ".parquet") and path.is_file():
            return read_shard(path)  # one shard, or a format-1 results.jsonl
        raise InputError(f"{path}: expected a corpus run directory, one of its shards, or a {LEGACY_RESULTS}")
    return results


def corpus_ranking(
    results: str | os.PathLike | Iterable[Mapping[str, Any]],
    *,
    by: str = "mean",
    min_count: int = 1,
    lowercase: bool = True,
    normalize: str | None = None,
    output: int | str = "mean",
) -> CorpusRanking:
    """Aggregate the per-word scores of a corpus run (a run directory, a shard, or rows) into a ranking.

    ``normalize="sum"`` divides each text's word scores by their absolute sum (``"max"``: by the largest
    absolute score) so long and short texts weigh alike; ``output`` picks one output of multi-output
    explanations (an index) or averages them (``"mean"``); words seen fewer than ``min_count`` times are
    left out.
    """
    if by not in RANK_BY:
        raise InputError(f"by must be one of {', '.join(RANK_BY)}, not {by!r}")
    if normalize not in NORMALIZE:
        raise InputError(f"normalize must be None, 'sum' or 'max', not {normalize!r}")
    if not isinstance(min_count, int) or min_count < 1:
        raise InputError(f"min_count must be a positive integer, got {min_count!r}")
    words: list[str] = []
    scores: list[np.ndarray] = []
    example_of: list[np.ndarray] = []
    methods = set()
    n_examples = 0
    for n, row in enumerate(_rows(results)):
        if "words" not in row or "word_scores" not in row:
            raise InputError(f"result {n} (id {row.get('id')!r}) has no words/word_scores")
        w = [str(x).lower() if lowercase else str(x) for x in row["words"]]
        s = np.asarray(row["word_scores"], dtype=float)
        if s.shape[:1] != (len(w),):
            raise InputError(f"result {n} (id {row.get('id')!r}): {len(w)} words but {s.shape[0]} scores")
        if s.ndim == 2:
            if output == "mean":
                s = s.mean(1)
            elif isinstance(output, (int, np.integer)) and -s.shape[1] <= int(output) < s.shape[1]:
                s = s[:, int(output)]
            else:
                raise InputError(f"output must be 'mean' or an index below {s.shape[1]}, got {output!r}")
        if normalize and s.size:
            scale = np.abs(s).sum() if normalize == "sum" else np.abs(s).max()
            s = s / scale if scale > 0 else s
        words.extend(w)
        scores.append(s)
        example_of.append(np.full(len(w), n_examples))
        methods.add(row.get("method"))
        n_examples += 1
    if not words:
        raise InputError("the corpus holds no scored words")
    flat = np.concatenate(scores)
    vocab, inverse = np.unique(np.array(words, dtype=object).astype(str), return_inverse=True)
    count = np.bincount(inverse, minlength=len(vocab))
    total = np.bincount(inverse, weights=flat, minlength=len(vocab))
    sq = np.bincount(inverse, weights=flat * flat, minlength=len(vocab))
    absum = np.bincount(inverse, weights=np.abs(flat), minlength=len(vocab))
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    pairs = np.unique(np.concatenate(example_of) * len(vocab) + inverse)
    documents = np.bincount(pairs % len(vocab), minlength=len(vocab))
    keep = count >= min_count
    stats = {"mean": mean, "mean_abs": absum / count, "sum": total, "count": count.astype(float)}
    # Ties are broken by word so the ranking is reproducible.
    order = np.lexsort((vocab, -stats[by]))
    order = order[keep[order]]
    if order.size == 0:
        raise InputError(f"no word occurs at least {min_count} times")
    return CorpusRanking(
        words=[str(w) for w in vocab[order]],
        mean=mean[order],
        std=std[order],
        count=count[order],
        documents=documents[order],
        total=total[order],
        mean_abs=(absum / count)[order],
        by=by,
        examples=n_examples,
        method=methods.pop() if len(methods) == 1 else None,
    )


def save_ranking(ranking: CorpusRanking, path: str | os.PathLike) -> None:
    """Write the ranking table as JSON (atomically)."""
    from .shards import write_atomic

    data = json.dumps(ranking.to_dict(), indent=1, allow_nan=False)
    write_atomic(Path(path), data.encode("utf-8"))
