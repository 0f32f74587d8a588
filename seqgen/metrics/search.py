"""Search-error metrics beside exact MAP search (Stahlberg & Byrne 2019, "On NMT search errors
and model errors: Cat got your tongue?", EMNLP): pure functions of per-prompt arrays."""

from __future__ import annotations

import math

import numpy as np

# float32 log-prob sums of the same sequence, accumulated in different batches, differ by
# rounding (~1e-7 per token); a gap below this is not a search error
SCORE_ATOL = 1e-4


def exact_proven_rate(proven: np.ndarray) -> float:
    """search/exact_proven: share of prompts whose exact-search result is the proven mode."""
    p = np.asarray(proven, bool).reshape(-1)
    return float(p.mean()) if p.size else math.nan


def beam_error_rate(
    beam_logprob: np.ndarray,
    mode_logprob: np.ndarray,
    proven: np.ndarray,
    *,
    atol: float = SCORE_ATOL,
) -> float:
    """search/beam_error: share of the prompts with a proven mode where the beam's best
    hypothesis scores below the mode, log p(y_beam | x) < log p(y* | x) - atol (Stahlberg &
    Byrne 2019's "search error"). beam_logprob: the unnormalized log-prob (EOS included) of the
    beam's top-ranked hypothesis, -inf when it did not end with EOS; NaN when no mode is proven.
    """
    beam_lp = np.asarray(beam_logprob, np.float64).reshape(-1)
    mode = np.asarray(mode_logprob, np.float64).reshape(-1)
    p = np.asarray(proven, bool).reshape(-1)
    if not p.any():
        return math.nan
    return float(np.mean(beam_lp[p] < mode[p] - atol))
