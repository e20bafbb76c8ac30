"""The corpus layer: explain a file of texts in batches (locally or on Ray), resumably, and rank the results."""

from .rank import CorpusRanking, corpus_ranking, save_ranking
from .run import load_results, read_texts, run_corpus

__all__ = ["CorpusRanking", "corpus_ranking", "load_results", "read_texts", "run_corpus", "save_ranking"]
