"""Stochastic beam search (`decoding/stochastic_beam.py`): sampling without replacement."""

from __future__ import annotations

import itertools
from types import SimpleNamespace as NS

import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.decoding import (
    DecodeRequest,
    stochastic_beam,
)
from tests.helpers_decoding import (
    log_softmax64,
    markov_table,
    position_step,
    seq_logprob,
    to_numpy,
)

# ----- stochastic beam: distinct samples without replacement, unbiased estimator -----


@pytest.mark.slow
def test_stochastic_beam_is_sampling_without_replacement():
    v, k, rows = 6, 3, 4000
    table = markov_table(v, 3, scale=1.0)
    params = {"table": jnp.asarray(table), "stop_at": jnp.int32(2)}
    out = stochastic_beam(
        DecodeRequest(
            position_step,
            params,
            jnp.zeros(rows, jnp.int32),
            max_len=3,
            vocab_size=v,
            key=5,
            cfg=NS(beam_size=k),
        )
    )
    out = to_numpy(out)
    lp = log_softmax64(table)
    seqs = [()] + [(a,) for a in (4, 5)] + [(a, b) for a in (4, 5) for b in (4, 5)]
    # EOS is certain at position 2, so a 2-token sequence has no EOS factor
    p = {s: np.exp(seq_logprob(lp, list(s), len(s) < 2)) for s in seqs}
    assert abs(sum(p.values()) - 1) < 1e-9
    incl = dict.fromkeys(seqs, 0.0)  # exact inclusion probabilities of successive sampling
    for perm in itertools.permutations(seqs, k):
        pr, left = 1.0, 1.0
        for s in perm:
            pr *= p[s] / left
            left -= p[s]
        for s in perm:
            incl[s] += pr
    assert out.ended.all() and np.all(np.isfinite(out.kappa))
    freq = dict.fromkeys(seqs, 0)
    estimates = np.zeros(rows)
    model_lp = np.zeros((rows, k))
    for r in range(rows):
        got = [tuple(out.tokens[r, j, : out.lengths[r, j]].tolist()) for j in range(k)]
        assert len(set(got)) == k
        for j, s in enumerate(got):
            freq[s] += 1
            model_lp[r, j] = np.log(p[s])
            estimates[r] += p[s] / out.inclusion_probs[r, j]
    np.testing.assert_allclose(out.logprobs.sum(-1) + out.eos_logprob, model_lp, rtol=1e-4)
    assert np.all(np.diff(out.scores, axis=1) <= 0)
    for s in seqs:
        q = incl[s]
        assert abs(freq[s] / rows - q) < 4 * np.sqrt(q * (1 - q) / rows) + 1e-9, (s, freq[s], q)
    # sum_{y in S} p(y) / q(y) is an unbiased estimator of sum_y p(y) = 1
    sem = estimates.std() / np.sqrt(rows)
    assert abs(estimates.mean() - 1.0) < 4 * sem + 1e-6, (estimates.mean(), sem)
