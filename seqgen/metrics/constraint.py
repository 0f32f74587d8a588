"""How much probability an automaton constraint removed (`seqgen.decoding.constraint`).

A constrained decoder samples from (or searches over) the model's per-step distribution
restricted to the allowed tokens and renormalized, which is not the model's distribution
conditioned on the constraint. These numbers say how far the mask pushed the model: with
m_t = the model's (t = 1, unmodified) probability of the tokens the automaton allowed at
generated position t of a sequence (its EOS step included), the decoders return log m_t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mass_removed(logmass: Sequence[np.ndarray]) -> tuple[float, float]:
    """(`constraint/mass_removed`, `constraint/step_mass_removed`) over the generated sequences
    (one array of log m_t per sequence):

    - constraint/mass_removed = mean over sequences of 1 - prod_t m_t: the probability that the
      unconstrained model, run on this sequence's prefixes, would have left the allowed set at
      some step (1 - the product of the per-step allowed masses along the path);
    - constraint/step_mass_removed = mean over sequences of the mean over their steps of
      1 - m_t (a sequence without generated steps counts 0).
    NaN when there are no sequences.
    """
    if len(logmass) == 0:
        return math.nan, math.nan
    seq = [1.0 - math.exp(float(np.sum(lm))) for lm in logmass]
    step = [float(np.mean(-np.expm1(lm))) if len(lm) else 0.0 for lm in logmass]
    return float(np.mean(seq)), float(np.mean(step))
