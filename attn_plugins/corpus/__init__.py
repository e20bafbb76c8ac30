"""The corpus layer: explain a file of texts in batches (locally or on Ray), resumably, and rank the results."""

from .rank import CorpusRanking, corpus_ranking, save_ranking
from .run import run_corpus
from .shards import load_errors, load_results
from .texts import read_texts

__all__ = [
    "CorpusRanking",
    "corpus_ranking",
    "load_errors",
    "load_results",
    "read_texts",
    "run_corpus",
    "save_ranking",
]
