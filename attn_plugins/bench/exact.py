"""Exact Shapley values for the faithfulness benchmark: every coalition evaluated, cached in an ``.npz`` file.

The values of all 2^p coalitions of a text's maskable tokens are what everything else is derived from:
the exact Shapley values, leave-one-out occlusion, and the answers shap's sampling explainers get (they
are looked up, so their evaluations are counted without running the model again). Masking is shap's
``Text`` masker's: the mask token written into the string in place of each masked token, the string
then tokenized by the model function, special tokens kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import shap

from ..errors import InputError
from ..explain.maskers import coalition_strings, coalition_values, shapley_values

# The cache of the source tree (a packaged install has none and recomputes what it needs).
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "faithful_exact.npz"


def text_masker(tokenizer: Any) -> shap.maskers.Text:
    """shap's Text masker with the mask token written in place of each masked token (never collapsed)."""
    if getattr(tokenizer, "mask_token", None) is None:
        raise InputError("the benchmark masks with the tokenizer's mask token, and this tokenizer has none")
    return shap.maskers.Text(tokenizer, mask_token=tokenizer.mask_token, collapse_mask_token=False)


class ExactCache:
    """Coalition values keyed by a case name, read from and written to one ``.npz`` file."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else None
        self.values: dict[str, np.ndarray] = {}
        self.texts: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            with np.load(self.path, allow_pickle=False) as data:
                index = json.loads(str(data["index"]))
                for key, text in index.items():
                    self.values[key] = np.asarray(data[key], dtype=np.float64)
                    self.texts[key] = text

    def get(self, key: str, text: str) -> np.ndarray | None:
        """The cached values of ``key`` if they were computed for this very text."""
        if self.texts.get(key) != text:
            return None
        return self.values.get(key)

    def put(self, key: str, text: str, values: np.ndarray) -> None:
        """Remember the coalition values of one case."""
        self.values[key] = np.asarray(values, dtype=np.float64)
        self.texts[key] = text

    def save(self, path: Path | str | None = None) -> Path:
        """Write every case (values as float32, what the float32 model gives) to ``path`` or the file read."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise InputError("ExactCache.save needs a path")
        target.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: v.astype(np.float32) for k, v in self.values.items()}
        np.savez_compressed(target, index=json.dumps(self.texts, sort_keys=True), **arrays)
        return target


def exact_case(
    fn: Any, masker: shap.maskers.Text, text: str, key: str, cache: ExactCache | None, recompute: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
    """(players, coalition values [2^p], coalition strings, computed now) of one text, cached under ``key``."""
    players, strings = coalition_strings(masker, text)
    values = None if recompute or cache is None else cache.get(key, text)
    computed = values is None
    if computed:
        players, values = coalition_values(fn, masker, text, batch=512, max_players=12)
        if cache is not None:
            cache.put(key, text, values)
    if len(values) != 2 ** len(players):
        raise InputError(f"cached values of {key!r} do not match its {len(players)} maskable tokens")
    return players, np.asarray(values, dtype=np.float64), strings, computed


def phi_of(values: np.ndarray, players: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values [n] from the coalition values."""
    return shapley_values(values, players, n)
