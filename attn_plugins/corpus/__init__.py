"""The corpus layer: explain a file of texts in batches (locally or on Ray), resumably, and rank the results.

The names load lazily: the command line reads ``source`` (model names, task classes) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers and the API docs; loaded on first use
    from .rank import CorpusRanking, corpus_ranking, save_ranking
    from .run import run_corpus
    from .shards import load_errors, load_results
    from .texts import read_texts

_LAZY = {
    "CorpusRanking": ".rank",
    "corpus_ranking": ".rank",
    "load_errors": ".shards",
    "load_results": ".shards",
    "read_texts": ".texts",
    "run_corpus": ".run",
    "save_ranking": ".rank",
}

__all__ = [
    "CorpusRanking",
    "corpus_ranking",
    "load_errors",
    "load_results",
    "read_texts",
    "run_corpus",
    "save_ranking",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
