"""Summaries for benchmark JSON: a mean with its bootstrap 95 % confidence interval (scipy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from ..errors import InputError


def mean_ci(values: Sequence[float], seed: int = 0, n_resamples: int = 1000) -> dict[str, Any]:
    """``{"mean", "ci95": [low, high], "n"}`` with a percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise InputError("mean_ci needs a non-empty 1-D list of values")
    if not np.isfinite(v).all():
        raise InputError("mean_ci got NaN or infinite values")
    mean = float(v.mean())
    if v.size == 1 or np.ptp(v) == 0:
        # No spread: every resample has the same mean (scipy would warn that the data are degenerate).
        low = high = mean
    else:
        res = bootstrap(
            (v,),
            np.mean,
            confidence_level=0.95,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], "n": int(v.size)}
