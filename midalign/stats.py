"""Pearson correlation with a permutation p-value: the paper's Fig. 1b statistic (base-model retrieval
against transfer performance per language), used by retrieve.py --correlate and the studies' reports."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pearson(x: Sequence[float], y: Sequence[float], permutations: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Pearson r and its two-sided permutation p-value ((count |r_perm| >= |r|) + 1) / (permutations + 1);
    both NaN when a series is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"Pearson r needs two equally long series of at least 3 values (got {len(x)} and {len(y)})")
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # r is undefined for a constant series (0 / 0), and so is its p
        return float("nan"), float("nan")
    r = float(np.corrcoef(x, y)[0, 1])
    rng = np.random.default_rng(seed)
    perms = np.array([np.corrcoef(x, rng.permutation(y))[0, 1] for _ in range(permutations)])
    return r, float((np.sum(np.abs(perms) >= abs(r) - 1e-12) + 1) / (permutations + 1))
