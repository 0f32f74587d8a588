"""Length of the generated continuations and how often they end with EOS."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def length_stats(lengths: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """(`length/mean`, `length/std`): mean and population std (ddof = 0) of the continuation
    lengths in tokens (EOS not counted); NaN for no sequences."""
    lens = np.asarray(lengths, np.float64)
    if not lens.size:
        return math.nan, math.nan
    return float(lens.mean()), float(lens.std())


def eos_rate(ended: Sequence[bool] | np.ndarray) -> float:
    """`length/eos_rate`: share of the sequences that emitted EOS before max_len; NaN for no
    sequences."""
    ended_arr = np.asarray(ended, bool).reshape(-1)
    return float(ended_arr.mean()) if ended_arr.size else math.nan
