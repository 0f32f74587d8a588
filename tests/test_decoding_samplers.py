"""top-n-sigma and Mirostat v2: kept sets equal the definitions on hand cases, Mirostat's update
is the paper's rule, and its sampled surprise settles at the target on a fixed distribution."""

from __future__ import annotations

from types import SimpleNamespace as NS

import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.decoding import DecodeRequest, sample
from seqgen.decoding import processor_table as table
from seqgen.decoding import processors as proc
from seqgen.decoding.common import DEFAULTS
from seqgen.decoding.knobs import traced_names
from seqgen.tokens import NUM_SPECIAL
from tests.helpers_decoding import markov_step

X = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 10.0], np.float32)  # std = sqrt(95/9) = 3.249


def kept(logits: np.ndarray, **knobs) -> set[int]:
    base = {
        k: DEFAULTS[k]
        for k in (*traced_names(), "top_k", "no_repeat_ngram_size", "min_tokens_to_keep")
    }
    flags = table.flags_from_cfg(lambda k: knobs.get(k, DEFAULTS[k]))
    arrays = {k: jnp.float32(v) for k, v in {**base, **knobs}.items()}
    out = np.asarray(table.process_logits(jnp.asarray(logits)[None], arrays, flags))[0]
    return {int(t) for t in np.flatnonzero(np.isfinite(out))}


@pytest.mark.parametrize(
    ("n", "allowed"),
    [(1.0, {5}), (2.0, {4, 5}), (3.0, {1, 2, 3, 4, 5}), (0.01, {5})],
)
def test_top_n_sigma_set(n, allowed):
    # by hand: threshold 10 - n * 3.249 = 6.75 (n=1), 3.50 (n=2), 0.25 (n=3)
    assert np.std(X) == pytest.approx(np.sqrt(95 / 9))
    assert kept(X, top_n_sigma=n) == allowed
    assert kept(X, top_n_sigma=n, temperature=0.5) == allowed  # invariant to temperature
    # sigma over the tokens still allowed: after top-k 3 the logits are (3, 4, 10)
    assert kept(X, top_k=3, top_n_sigma=1.0) == {
        t for t in (3, 4, 5) if X[t] >= 10 - np.std([3.0, 4.0, 10.0])
    }


def test_mirostat_truncation_and_update_by_hand():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.125, 0.125]]))  # surprises 1, 2, 3, 3 bits
    keep = lambda mu: set(  # noqa: E731
        np.flatnonzero(np.isfinite(np.asarray(proc.mirostat_truncate(logits, jnp.array([mu])))))
    )
    assert keep(2.5) == {0, 1}
    assert keep(3.0) == {0, 1, 2, 3}
    assert keep(0.5) == {0}  # the most probable token is always kept
    # mu <- mu - eta (s - tau): 6 - 0.1 * (4 - 3) = 5.9; below-target surprise raises mu
    assert float(proc.mirostat_update(jnp.float32(6.0), 4.0, 3.0, 0.1)) == pytest.approx(5.9)
    assert float(proc.mirostat_update(jnp.float32(6.0), 1.0, 3.0, 0.5)) == pytest.approx(7.0)


def test_mirostat_sampler_follows_the_rule_and_reaches_the_target():
    v, steps, rows, tau, lr = NUM_SPECIAL + 20, 300, 16, 3.0, 0.1
    p = 1.0 / np.arange(1, 21)  # Zipf: surprises 1.9 .. 6.2 bits
    p /= p.sum()
    logits = np.full(v, -1e9, np.float32)
    logits[NUM_SPECIAL:] = np.log(p)  # EOS impossible: every row runs `steps` tokens
    out = sample(
        DecodeRequest(
            markov_step,
            jnp.asarray(np.tile(logits, (v, 1))),
            jnp.zeros(1),
            max_len=steps,
            vocab_size=v,
            key=3,
            num_samples=rows,
            cfg=NS(mirostat_tau=tau, mirostat_lr=lr),
        )
    )
    toks = np.asarray(out.tokens[0]) - NUM_SPECIAL  # [rows, steps]
    assert (toks >= 0).all() and not np.asarray(out.ended).any()
    surprise = -np.log2(p)
    mu = np.full(rows, 2 * tau)
    observed = []
    for t in range(steps):  # replay the paper's rule: every token lies in its truncated set
        s = surprise[toks[:, t]]
        assert ((s <= mu + 1e-5) | (toks[:, t] == 0)).all()
        observed.append(s)
        mu = mu - lr * (s - tau)
    observed = np.array(observed)
    assert abs(observed[steps // 2 :].mean() - tau) < 0.1
    assert abs(observed.mean() - surprise @ p) > 0.5  # without control it would be 3.6+ bits
    # the processed log-probs are those of the truncated, renormalized distribution
    plp = np.asarray(out.processed_logprobs[0])
    assert (plp >= np.log(p[toks]) - 1e-5).all() and (plp <= 0).all()
