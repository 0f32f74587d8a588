"""Beam and diverse beam search (`decoding/beam.py`): brute-force optima, the exact stopping
rule, EOS admission, the DPFSA mode, diversity."""

from __future__ import annotations

import dataclasses
import itertools
from types import SimpleNamespace as NS

import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.decoding import (
    DecodeRequest,
    beam,
    diverse_beam,
)
from seqgen.tokens import EOS_ID, PAD_ID
from tests.helpers_decoding import (
    PROMPT_LENGTHS,
    PROMPTS,
    brute_force_logprob,
    log_softmax64,
    markov_beam,
    markov_step,
    markov_table,
    to_numpy,
)

# ----- exactness: brute force and the DPFSA mode -----

LENGTH_PENALTY_FN = {
    "none": lambda n, a: 1.0,
    "average": lambda n, a: n,
    "gnmt": lambda n, a: ((5 + n) / 6) ** a,
    "power": lambda n, a: n**a,
}


def brute_force(table_lp, prompt, max_len, length_penalty, alpha, min_length, symbols=(4, 5)):
    """Every continuation of `prompt` over `symbols`: EOS-ended with >= min_length tokens, or
    cut at max_len; scored by the normalized model log-prob, best first. [(score, seq, ended)]"""
    budget = max_len - len(prompt)
    start = prompt[-1] if prompt else 1
    norm = LENGTH_PENALTY_FN[length_penalty]
    cands = []
    for n in range(budget + 1):
        for seq in itertools.product(symbols, repeat=n):
            prev, total = start, 0.0
            for tok in seq:
                total += table_lp[prev, tok]
                prev = tok
            if n == budget:  # cut at max_len: L = its generated tokens, no EOS
                cands.append((total / norm(n, alpha), list(seq), False))
            if n < budget and n >= min_length:
                cands.append(
                    ((total + table_lp[prev, EOS_ID]) / norm(n + 1, alpha), list(seq), True)
                )
    return sorted(cands, key=lambda c: -c[0])


@pytest.mark.parametrize("length_penalty", ["none", "average", "gnmt", "power"])
def test_beam_n_best_equals_brute_force(length_penalty):
    """With K large enough for every hypothesis, beam's n-best is the brute-force ranking of all
    continuations, finished and cut alike, under the same normalized score; prompts of 2, 1, 0
    tokens give budgets of 2, 3, 4; min_length (traced: one compile) restricts EOS endings."""
    v, max_len, alpha = 6, 4, 0.8  # symbols 4, 5: up to 15 ended + 16 cut sequences
    table = markov_table(v, 7)
    lp = log_softmax64(table)
    prompts = np.array([[4, 5], [5, 0], [0, 0]], np.int32)
    plens = np.array([2, 1, 0], np.int32)
    cut_above_fin = 0
    for min_length in (0, 2):
        knobs = dict(
            beam_size=32, length_penalty=length_penalty, alpha=alpha, min_length=min_length
        )
        out = markov_beam(table, max_len, prompts, plens, **knobs)
        for i, plen in enumerate(plens):
            cands = brute_force(
                lp, prompts[i, :plen].tolist(), max_len, length_penalty, alpha, min_length
            )
            # sequences through the impossible (logit -1e9) PAD/BOS/UNK come after the real ones
            real = out.scores[i] > -1e6
            assert real.sum() == len(cands) and real[: len(cands)].all()
            # the same scores in the same order; every returned hypothesis is a distinct
            # candidate with its own score (a Markov chain ties permuted transitions: 4544, 4454)
            np.testing.assert_allclose(
                out.scores[i, : len(cands)], [c[0] for c in cands], rtol=1e-5
            )
            score_of = {(tuple(seq), ended): score for score, seq, ended in cands}
            got = set()
            for k in range(len(cands)):
                assert out.tokens[i, k, :plen].tolist() == prompts[i, :plen].tolist()
                hyp = (tuple(out.tokens[i, k, plen : out.lengths[i, k]]), bool(out.ended[i, k]))
                np.testing.assert_allclose(out.scores[i, k], score_of[hyp], rtol=1e-5)
                got.add(hyp)
            assert len(got) == len(cands)
            fin = [k for k, c in enumerate(cands) if c[2]]
            cut_above_fin += any(not c[2] for c in cands[: fin[-1]]) if fin else 0
            # the reported log-probs are the model's, EOS included when it was emitted
            for k in range(len(cands)):
                seq = out.tokens[i, k, plen : out.lengths[i, k]].tolist()
                want = brute_force_logprob(lp, prompts[i, :plen].tolist(), seq, out.ended[i, k])
                got = out.logprobs[i, k].sum() + out.eos_logprob[i, k]
                np.testing.assert_allclose(got, want, rtol=1e-5)
    assert cut_above_fin > 0  # some cut hypothesis outranks a finished one


def reference_beam(table_lp, prompt, max_len, k, length_penalty, alpha, min_length):
    """Beam search in plain Python, float64, WITHOUT early stopping: t5x's rule (every EOS among
    the 2K best candidates enters the pool of the K best finished), K best non-EOS stay live,
    then finished and cut hypotheses by one normalized score. Returns the K best scores."""
    norm = LENGTH_PENALTY_FN[length_penalty]
    budget, v = max_len - len(prompt), table_lp.shape[0]
    live, fin = [(0.0, prompt[-1] if prompt else 1)], []
    for n in range(budget):  # n continuation tokens so far
        cands = [
            (s + table_lp[last, tok], tok)
            for s, last in live
            for tok in range(v)
            if tok != EOS_ID or n >= min_length
        ]
        top = sorted(cands, key=lambda c: -c[0])[: 2 * k]
        fin = sorted(fin + [c[0] / norm(n + 1, alpha) for c in top if c[1] == EOS_ID])[::-1][:k]
        live = [c for c in top if c[1] != EOS_ID][:k]
    return sorted(fin + [s / norm(budget, alpha) for s, _ in live])[::-1][:k]


@pytest.mark.parametrize("length_penalty", ["none", "average", "gnmt", "power"])
def test_beam_stopping_rule_is_exact(length_penalty):
    """K = 3 (fewer beams than hypotheses): the early-stopped beam returns the scores of a plain
    beam search that runs every step, for every normalizer, prompt length and min_length."""
    v, max_len, alpha = 7, 9, 0.8
    table = markov_table(v, 14, scale=2.0)  # EOS ranked >= K matters in 6 of 24 cases
    lp = log_softmax64(table)
    prompts, plens = np.array([[4, 5, 6], [6, 0, 0], [0, 0, 0]], np.int32), PROMPT_LENGTHS
    for min_length in (0, 2):
        knobs = dict(beam_size=3, length_penalty=length_penalty, alpha=alpha, min_length=min_length)
        out = markov_beam(table, max_len, prompts, plens, **knobs)
        for i, plen in enumerate(plens):
            prompt = prompts[i, :plen].tolist()
            want = reference_beam(lp, prompt, max_len, 3, length_penalty, alpha, min_length)
            np.testing.assert_allclose(out.scores[i], want, rtol=1e-5)


def test_beam_cut_hypothesis_outranks_finished_under_average():
    """Finalization by score (Hugging Face): a hypothesis cut at max_len with a better average
    log-prob comes before a finished one; ranking finished ones first would return
    44444+EOS (-0.557) above 444444 (-0.105)."""
    p = {EOS_ID: 0.06, 4: 0.9, 5: 0.04}
    row = np.full(6, -1e9)
    for tok, q in p.items():
        row[tok] = np.log(q)
    table = np.tile(row, (6, 1)).astype(np.float32)
    table[5] = np.log([1e-9, 1e-9, 0.5, 1e-9, 0.25, 0.25])  # irrelevant to the top 2
    out = markov_beam(table, 6, beam_size=2, length_penalty="average")
    lp4, lpe = np.log(0.9), np.log(0.06)
    np.testing.assert_array_equal(out.ended[0], [False, True])
    np.testing.assert_array_equal(out.lengths[0], [6, 5])
    assert out.tokens[0, 0].tolist() == [4] * 6
    assert out.tokens[0, 1].tolist() == [4] * 5 + [EOS_ID]
    np.testing.assert_allclose(out.scores[0], [lp4, (5 * lp4 + lpe) / 6], rtol=1e-5)
    assert out.scores[0, 1] < -0.5 < -0.2 < out.scores[0, 0]


def test_beam_admits_every_eos_candidate_among_2k():
    """t5x's and praxis's beam-search case: the same "logits" [-inf, -inf, -1.0 (EOS), -inf,
    -0.9, -0.1] at every step, K = 2, no normalization, max_len 3.

    The decoders log-softmax what the step function returns, and those constants do not sum to
    one in probability (e^-1 + e^-0.9 + e^-0.1 = 1.679), so each log-prob is the constant minus
    logsumexp = 0.5184: EOS -1.518, token 4 -1.418, token 5 -0.618. At step 0 the 2K = 4
    candidates are 5, 4, EOS (rank 2 = K, which the ranked-below-K rule of Hugging Face and
    fairseq discards) and an impossible one. Admitting it, [EOS] (-1.518) beats every other
    hypothesis; the runner-up is 5 5 5 cut at max_len (-1.855), then 5 EOS (-2.136).
    The ranked-below-K rule returned 5 5 5 (-1.855) and 5 5 4 (-2.655)."""
    row = np.array([-np.inf, -np.inf, -1.0, -np.inf, -0.9, -0.1], np.float32)
    out = markov_beam(np.tile(row, (6, 1)), 3, beam_size=2)
    lse = np.log(np.exp(-1.0) + np.exp(-0.9) + np.exp(-0.1))
    np.testing.assert_allclose(lse, 0.5184, atol=1e-4)
    eos, five = -1.0 - lse, -0.1 - lse
    np.testing.assert_allclose(out.scores[0], [eos, 3 * five], rtol=1e-6)
    np.testing.assert_allclose(out.scores[0], [-1.5184, -1.8552], atol=1e-4)
    np.testing.assert_array_equal(out.ended[0], [True, False])
    np.testing.assert_array_equal(out.lengths[0], [0, 3])
    assert out.tokens[0].tolist() == [[EOS_ID, PAD_ID, PAD_ID], [5, 5, 5]]
    np.testing.assert_allclose(out.eos_logprob[0], [eos, 0.0], rtol=1e-6)


def test_beam_finds_dpfsa_mode():
    from seqgen.data.synthetic import DPFSA

    for seed in range(3):
        d = DPFSA.random(6, 4, seed, stop_prob=0.15)
        mode, mode_lp = d.mode()
        assert len(mode) < 15
        out = beam(
            DecodeRequest(
                d.step_fn,
                d.params(),
                d.init_carry(1),
                max_len=16,
                vocab_size=d.vocab_size,
                cfg=NS(beam_size=64),
            )
        )
        assert out.ended[0, :8].all()
        assert out.tokens[0, 0, : out.lengths[0, 0]].tolist() == mode
        np.testing.assert_allclose(out.scores[0, 0], mode_lp, rtol=1e-5)
        # every n-best entry is scored with its exact log-probability, best first
        for k in range(8):
            seq = out.tokens[0, k, : out.lengths[0, k]].tolist()
            np.testing.assert_allclose(out.scores[0, k], d.logprob(seq), rtol=1e-4)
        assert np.all(np.diff(out.scores[0, :8]) <= 0)


def test_beam_stops_exactly_and_freezes():
    """With K=2, a row whose pool is full and cannot be beaten stops: its output equals that of
    a longer max_len run (the remaining steps were no-ops)."""
    outs = [markov_beam(markov_table(7, 11), m, beam_size=2) for m in (20, 40)]
    assert outs[0].ended.all()
    np.testing.assert_array_equal(outs[0].tokens, outs[1].tokens[..., :20])
    np.testing.assert_allclose(outs[0].scores, outs[1].scores)


def test_diverse_beam_one_group_is_beam_and_groups_diverge():
    table = jnp.asarray(markov_table(9, 2))
    kw = dict(max_len=8, vocab_size=9)
    b = beam(
        DecodeRequest(
            markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, cfg=NS(beam_size=4), **kw
        )
    )
    d1 = diverse_beam(
        DecodeRequest(
            markov_step,
            table,
            jnp.zeros(3),
            PROMPTS,
            PROMPT_LENGTHS,
            cfg=NS(beam_size=4, num_groups=1, diversity_penalty=5.0),
            **kw,
        )
    )
    np.testing.assert_array_equal(b.tokens, d1.tokens)
    np.testing.assert_allclose(b.scores, d1.scores)
    # a huge penalty: the 4 groups (1 beam each) choose 4 different first tokens
    d4 = diverse_beam(
        DecodeRequest(
            markov_step,
            table,
            jnp.zeros(1),
            cfg=NS(beam_size=4, num_groups=4, diversity_penalty=1e4),
            **kw,
        )
    )
    firsts = d4.tokens[0, :, 0]
    assert len(set(firsts.tolist())) == 4
    assert np.all(np.diff(d4.scores[0]) <= 0)


@pytest.mark.parametrize(("lam", "want"), [(0.1, [4, 4, 4]), (0.2, [4, 4, 5]), (1.2, [4, 5, 6])])
def test_diverse_beam_hamming_penalty_value(lam, want):
    """One step from BOS with p(a, b, c, EOS) = (.45, .35, .15, .05) and 3 groups of 1 beam.
    Group g ranks token v by log p(v) - lam * #{earlier groups that chose v}. log .45 - log .35
    = 0.2513, so: lam = 0.1: a, a (penalty 0.1), a (penalty 0.2 < 0.2513); lam = 0.2: a, a,
    then b (2 * 0.2 > 0.2513); lam = 1.2: a, b (1.2 > 0.2513), then c (log .45 - 1.2 = -1.999
    and log .35 - 1.2 = -2.250 < log .15 = -1.897). The returned scores are the unpenalized
    log-probs, best first."""
    probs = {4: 0.45, 5: 0.35, 6: 0.15, EOS_ID: 0.05}
    table = np.full((7, 7), -1e9, np.float32)
    for tok, p in probs.items():
        table[:, tok] = np.log(p)
    cfg = NS(beam_size=3, num_groups=3, diversity_penalty=lam)
    req = DecodeRequest(markov_step, jnp.asarray(table), jnp.zeros(1), max_len=1, vocab_size=7)
    out = to_numpy(diverse_beam(dataclasses.replace(req, cfg=cfg)))
    order = sorted(want, key=lambda t: -probs[t])  # the output is sorted by score
    assert out.tokens[0, :, 0].tolist() == order
    np.testing.assert_allclose(out.scores[0], np.log([probs[t] for t in order]), rtol=1e-6)
    assert not out.ended.any()
