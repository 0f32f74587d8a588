"""Decoders: identities, brute-force optima, distributions, invariances, compile counts, errors.

Tiny step functions only (a Markov transition table, a 16-unit LSTM, a position-aware table,
the DPFSA oracle), so every test runs on 2 CPU cores in seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from seqgen.decoding import (
    DECODERS,
    LOOPS,
    DecodeRequest,
    beam,
    decode,
    diverse_beam,
    greedy,
    sample,
    stochastic_beam,
)
from seqgen.errors import UserError
from seqgen.tokens import EOS_ID, PAD_ID

# ----- tiny step functions (module level: the same object each call, so compiles are reused) ---


def markov_step(params, carry, tokens):
    """Next-token logits depend only on the previous token: params [V, V]."""
    return carry, params[tokens]


def lstm_step(params, carry, tokens):
    """A one-layer LSTM language model step, the same math as an nn.LSTM cell."""
    c, h = carry
    x = params["emb"][tokens]
    z = jnp.concatenate([x, h], axis=-1) @ params["w"] + params["b"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h @ params["out"] + params["out_b"]


def position_step(params, carry, tokens):
    """Markov table for positions < params['stop_at']; EOS is certain at position stop_at."""
    logits = params["table"][tokens]
    eos_only = jnp.full_like(logits, -1e9).at[:, EOS_ID].set(0.0)
    logits = jnp.where((carry >= params["stop_at"])[:, None], eos_only, logits)
    return carry + 1, logits


def markov_table(v: int, seed: int, scale: float = 1.5) -> np.ndarray:
    """Random logits with PAD, BOS, UNK impossible (as in a trained model)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(v, v)) * scale
    t[:, [0, 1, 3]] = -1e9
    return t.astype(np.float32)


def log_softmax64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def lstm_params(v: int = 9, hidden: int = 16, seed: int = 0, eos_bias: float = 0.0) -> dict:
    rng = np.random.default_rng(seed)
    out_b = rng.normal(size=v) * 0.5
    out_b[[0, 1, 3]] = -1e9
    out_b[EOS_ID] += eos_bias
    return {
        "emb": jnp.asarray(rng.normal(size=(v, 8)), jnp.float32),
        "w": jnp.asarray(rng.normal(size=(8 + hidden, 4 * hidden)) * 0.5, jnp.float32),
        "b": jnp.zeros(4 * hidden, jnp.float32),
        "out": jnp.asarray(rng.normal(size=(hidden, v)) * 1.5, jnp.float32),
        "out_b": jnp.asarray(out_b, jnp.float32),
    }


def to_numpy(out):
    """Index on host arrays: element-wise indexing of jax arrays dispatches a device op each."""
    return jax.tree.map(np.asarray, out)


def lstm_carry(batch: int, hidden: int = 16):
    return (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden)))


PROMPTS = np.array([[4, 5, 6], [7, 0, 0], [0, 0, 0]], np.int32)
PROMPT_LENGTHS = np.array([3, 1, 0], np.int32)


def seq_logprob(table_lp: np.ndarray, seq: list[int], ended: bool) -> float:
    """log p(seq [+ EOS]) under a Markov table of log-probs, starting from BOS."""
    prev, total = 1, 0.0
    for tok in seq:
        total += table_lp[prev, tok]
        prev = tok
    return total + (table_lp[prev, EOS_ID] if ended else 0.0)


# ----- greedy == sample(temperature=0); beam K=1 walks greedy's path with a finished pool -----


def greedy_path_endings(table_lp: np.ndarray, out, i: int, max_len: int) -> list:
    """Every hypothesis beam K=1 (t5x's rule) can return for row i, from greedy's output: each
    prefix of greedy's continuation followed by EOS where EOS was among the top-2 children,
    and greedy's own result (EOS-ended, or cut at max_len). [(score, tokens, ended)]"""
    plen = int(PROMPT_LENGTHS[i])
    prev = 1 if plen == 0 else int(PROMPTS[i, plen - 1])
    cont = out.tokens[i, 0, plen : out.lengths[i, 0]].tolist()
    cands, total = [], 0.0
    for j, tok in enumerate(cont):
        if EOS_ID in np.argsort(-table_lp[prev])[:2]:
            cands.append((total + table_lp[prev, EOS_ID], cont[:j], True))
        total += table_lp[prev, tok]
        prev = tok
    ended = bool(out.ended[i, 0])
    cands.append((total + (table_lp[prev, EOS_ID] if ended else 0.0), cont, ended))
    assert ended or plen + len(cont) == max_len
    return cands


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "markov"])
def test_greedy_equals_sample_t0_and_beam1_extends_greedy(model):
    if model == "lstm":
        step, params, carry = lstm_step, lstm_params(eos_bias=1.0), lstm_carry(3)
    else:
        table = markov_table(9, 1)
        step, params, carry = markov_step, jnp.asarray(table), jnp.zeros(3)
    kw = dict(max_len=12, vocab_size=9)
    g = to_numpy(greedy(DecodeRequest(step, params, carry, PROMPTS, PROMPT_LENGTHS, **kw)))
    b = to_numpy(
        beam(DecodeRequest(step, params, carry, PROMPTS, PROMPT_LENGTHS, cfg=NS(beam_size=1), **kw))
    )
    # t = 0 is greedy also with typical-p, which at t = 1 may drop the argmax: its t -> 0 limit
    cfg = NS(temperature=0.0, typical_p=0.3) if model == "lstm" else NS(temperature=0.0)
    s = sample(DecodeRequest(step, params, carry, PROMPTS, PROMPT_LENGTHS, cfg=cfg, key=3, **kw))
    np.testing.assert_array_equal(s.tokens, g.tokens)
    np.testing.assert_array_equal(s.lengths, g.lengths)
    np.testing.assert_array_equal(s.ended, g.ended)
    np.testing.assert_allclose(s.scores, g.scores, rtol=1e-6)
    np.testing.assert_allclose(s.logprobs, g.logprobs, rtol=1e-6)
    # the prompt is reproduced, then the continuation, then EOS, then PAD
    for i, n in enumerate(PROMPT_LENGTHS):
        np.testing.assert_array_equal(g.tokens[i, 0, :n], PROMPTS[i, :n])
        assert np.all(g.logprobs[i, 0, :n] == 0)
        length = g.lengths[i, 0]
        if g.ended[i, 0]:
            assert g.tokens[i, 0, length] == EOS_ID
            assert np.all(g.tokens[i, 0, length + 1 :] == PAD_ID)
    # beam K=1 (no normalization): greedy's sequence or an EOS-ended prefix of it, never worse
    for i in range(3):
        n = b.lengths[i, 0]
        np.testing.assert_array_equal(b.tokens[i, 0, :n], g.tokens[i, 0, :n])
        assert n <= g.lengths[i, 0] and (b.ended[i, 0] or n == g.lengths[i, 0])
        assert b.scores[i, 0] >= g.scores[i, 0] - 1e-5
    if model == "markov":
        lp = log_softmax64(table)
        assert g.ended.any()
        for i in range(3):  # greedy really is the argmax: replay the Markov chain
            prev = 1 if PROMPT_LENGTHS[i] == 0 else PROMPTS[i, PROMPT_LENGTHS[i] - 1]
            for t in range(PROMPT_LENGTHS[i], g.lengths[i, 0]):
                assert g.tokens[i, 0, t] == np.argmax(table[prev])
                prev = g.tokens[i, 0, t]
        differs = 0
        for i in range(3):  # and beam K=1 returns the best of greedy's path endings
            score, seq, ended = max(greedy_path_endings(lp, g, i, 12), key=lambda c: c[0])
            plen = PROMPT_LENGTHS[i]
            assert b.tokens[i, 0, plen : b.lengths[i, 0]].tolist() == seq
            assert bool(b.ended[i, 0]) == ended
            np.testing.assert_allclose(b.scores[i, 0], score, rtol=1e-5)
            differs += b.lengths[i, 0] != g.lengths[i, 0]
        assert 0 < differs < 3  # both cases occur: the test can tell the two EOS rules apart


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
        cfg = NS(beam_size=32, length_penalty=length_penalty, alpha=alpha, min_length=min_length)
        out = beam(
            DecodeRequest(
                markov_step,
                jnp.asarray(table),
                jnp.zeros(3),
                prompts,
                plens,
                max_len=max_len,
                vocab_size=v,
                cfg=cfg,
            )
        )
        out = to_numpy(out)
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
        cfg = NS(beam_size=3, length_penalty=length_penalty, alpha=alpha, min_length=min_length)
        out = to_numpy(
            beam(
                DecodeRequest(
                    markov_step,
                    jnp.asarray(table),
                    jnp.zeros(3),
                    prompts,
                    plens,
                    max_len=max_len,
                    vocab_size=v,
                    cfg=cfg,
                )
            )
        )
        for i, plen in enumerate(plens):
            prompt = prompts[i, :plen].tolist()
            want = reference_beam(lp, prompt, max_len, 3, length_penalty, alpha, min_length)
            np.testing.assert_allclose(out.scores[i], want, rtol=1e-5)


def brute_force_logprob(table_lp, prompt, seq, ended) -> float:
    prev, total = (prompt[-1] if prompt else 1), 0.0
    for tok in seq:
        total += table_lp[prev, tok]
        prev = tok
    return total + (table_lp[prev, EOS_ID] if ended else 0.0)


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
    cfg = NS(beam_size=2, length_penalty="average")
    out = to_numpy(
        beam(
            DecodeRequest(
                markov_step, jnp.asarray(table), jnp.zeros(1), max_len=6, vocab_size=6, cfg=cfg
            )
        )
    )
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
    table = jnp.asarray(np.tile(row, (6, 1)))
    out = to_numpy(
        beam(
            DecodeRequest(
                markov_step, table, jnp.zeros(1), max_len=3, vocab_size=6, cfg=NS(beam_size=2)
            )
        )
    )
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
    table = jnp.asarray(markov_table(7, 11))
    outs = [
        beam(
            DecodeRequest(
                markov_step, table, jnp.zeros(1), max_len=m, vocab_size=7, cfg=NS(beam_size=2)
            )
        )
        for m in (20, 40)
    ]
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


# ----- the loop variants: the same bits from every decoder -----


@pytest.mark.slow
def test_every_loop_variant_gives_the_same_bits():
    """Every decoder, every `loop` (scan, unrolled scan, masked scan, while loop) returns the
    same outputs bit for bit; EOS is likely, so the batch ends before max_len and the variants
    really differ in what they run after it (skip, mask, stop)."""
    table = markov_table(9, 4)
    table[:, EOS_ID] += 2.0
    params, carry = jnp.asarray(table), jnp.zeros(3)
    cfgs = [
        {"name": "greedy", "repetition_penalty": 1.3},
        {"name": "sample", "top_p": 0.9, "no_repeat_ngram_size": 2, "mirostat_tau": 3.0},
        {"name": "beam", "beam_size": 3, "length_penalty": "gnmt"},
        {"name": "diverse_beam", "beam_size": 4, "num_groups": 2, "diversity_penalty": 0.5},
        {"name": "stochastic_beam", "beam_size": 3},
        {"name": "exact", "beam_size": 2, "max_expansions": 20},
        {"name": "mbr", "num_candidates": 3, "num_references": 3},
    ]
    for cfg in cfgs:
        outs = {}
        for loop in LOOPS:
            out = decode(
                markov_step, params, carry, PROMPTS, PROMPT_LENGTHS, cfg=cfg, max_len=12,
                num_samples=2, key=7, vocab_size=9, loop=loop,
            )  # fmt: skip
            outs[loop] = to_numpy(out)
        assert outs["scan"].ended.any(axis=1).all(), cfg  # rows end: the skip is exercised
        for loop, out in outs.items():
            for f in out.__dataclass_fields__:
                a, b = getattr(outs["scan"], f), getattr(out, f)
                assert (a is None) == (b is None), (cfg["name"], loop, f)
                if a is not None:
                    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (cfg, loop, f)


def test_unknown_loop_is_a_user_error():
    with pytest.raises(UserError, match="decode.loop='fast' is unknown; allowed: auto, scan"):
        decode(markov_step, jnp.zeros((9, 9)), jnp.zeros(1), cfg=None, max_len=2, vocab_size=9,
               loop="fast")  # fmt: skip


# ----- min_length: no EOS before it, for every decoder -----


@pytest.mark.slow
def test_min_length_for_every_decoder():
    """EOS is the most probable token from every state, so without min_length every decoder
    would stop at once; with min_length = 3 none ends before 3 continuation tokens, greedy
    ends at exactly 3, and the sampled distributions are renormalized over the other tokens
    while EOS is forbidden (the model's own log-probs are reported unchanged)."""
    v, m = 9, 3
    table = markov_table(v, 6)
    table[:, EOS_ID] = table.max(axis=1) + 1.0
    lp = log_softmax64(table)
    params, kw = jnp.asarray(table), dict(max_len=10, vocab_size=v, key=2)
    cfgs = {
        "greedy": NS(min_length=m),
        "sample": NS(min_length=m),
        "beam": NS(min_length=m, beam_size=3),
        "stochastic_beam": NS(min_length=m, beam_size=3),
        "diverse_beam": NS(min_length=m, beam_size=4, num_groups=2, diversity_penalty=0.5),
    }
    for name, cfg in cfgs.items():
        out = DECODERS[name](
            DecodeRequest(
                markov_step,
                params,
                jnp.zeros(3),
                PROMPTS,
                PROMPT_LENGTHS,
                cfg=cfg,
                num_samples=20,
                **kw,
            )
        )
        out = to_numpy(out)
        gen = out.lengths - PROMPT_LENGTHS[:, None]  # continuation tokens, EOS excluded
        real = np.isfinite(out.scores)
        assert out.ended.any(), name
        assert np.all(gen[out.ended] >= m), name
        if name in ("greedy", "sample"):
            assert np.all(out.ended) and np.any(gen == m), name
        if name == "greedy":
            np.testing.assert_array_equal(gen, m)
        for i, j in zip(*np.nonzero(real)):  # model log-probs: unchanged by the EOS mask
            plen = PROMPT_LENGTHS[i]
            seq = out.tokens[i, j, plen : out.lengths[i, j]].tolist()
            prompt = PROMPTS[i, :plen].tolist()
            want = brute_force_logprob(lp, prompt, seq, out.ended[i, j])
            np.testing.assert_allclose(
                out.logprobs[i, j].sum() + out.eos_logprob[i, j], want, rtol=1e-5
            )
            if name in ("sample", "stochastic_beam"):  # sampled from the renormalized steps
                prev, total = (prompt[-1] if prompt else 1), 0.0
                for n, tok in enumerate(seq):
                    total += lp[prev, tok] - (np.log1p(-np.exp(lp[prev, EOS_ID])) if n < m else 0)
                    prev = tok
                total += lp[prev, EOS_ID] if out.ended[i, j] else 0.0
                got = out.processed_logprobs[i, j].sum() + out.eos_processed_logprob[i, j]
                np.testing.assert_allclose(got, total, rtol=1e-5)
    # without min_length the best beam is the empty continuation (EOS is the argmax everywhere)
    out = beam(
        DecodeRequest(
            markov_step, params, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, cfg=NS(beam_size=3), **kw
        )
    )
    assert np.all(out.lengths[:, 0] == PROMPT_LENGTHS) and out.ended[:, 0].all()


# ----- sampling distribution and truncation sets -----


def test_sample_matches_model_distribution():
    v, n = 7, 6000
    table = markov_table(v, 5, scale=0.8)
    for temp in (1.0, 0.6):
        out = sample(
            DecodeRequest(
                markov_step,
                jnp.asarray(table),
                jnp.zeros(1),
                max_len=2,
                vocab_size=v,
                key=11,
                num_samples=n,
                cfg=NS(temperature=temp),
            )
        )
        out = to_numpy(out)
        lp = log_softmax64(table / temp)
        outcomes = [((), True)] + [((a,), True) for a in (4, 5, 6)]
        outcomes += [((a, b), False) for a in (4, 5, 6) for b in (4, 5, 6)]
        probs = np.array([np.exp(seq_logprob(lp, list(s), e)) for s, e in outcomes])
        assert abs(probs.sum() - 1) < 1e-9
        counts = {o: 0 for o in outcomes}
        for i in range(n):
            seq = tuple(out.tokens[0, i, : out.lengths[0, i]].tolist())
            counts[(seq, bool(out.ended[0, i]))] += 1
        observed = np.array([counts[o] for o in outcomes])
        assert observed.sum() == n
        p_value = stats.chisquare(observed, probs * n).pvalue
        assert p_value > 1e-3, (temp, observed, probs * n)
        # tempered log-probs are those of log softmax(logits / t); scores are the model's
        i = int(np.argmax(out.lengths[0]))
        seq = out.tokens[0, i, : out.lengths[0, i]].tolist()
        ended = bool(out.ended[0, i])
        tl = out.tempered_logprobs[0, i].sum() + out.eos_tempered_logprob[0, i]
        np.testing.assert_allclose(tl, seq_logprob(lp, seq, ended), rtol=1e-5)
        model = seq_logprob(log_softmax64(table), seq, ended)
        np.testing.assert_allclose(out.scores[0, i], model, rtol=1e-5)
        np.testing.assert_allclose(out.processed_logprobs, out.tempered_logprobs, atol=1e-6)


# p over tokens [EOS, 4, 5, 6, 7, 8, 9] with a tie (0.2, 0.2)
P_FIXED = {2: 0.05, 4: 0.3, 5: 0.2, 6: 0.2, 7: 0.15, 8: 0.07, 9: 0.03}


def fixed_logits() -> np.ndarray:
    x = np.full(10, -1e9, np.float32)
    for tok, p in P_FIXED.items():
        x[tok] = np.log(p)
    return x


def typical_set(p: dict, mass: float) -> set:
    """Meister et al. 2023 by hand: sort by |-log p - H|, smallest prefix with mass >= tau."""
    h = -sum(q * np.log(q) for q in p.values())
    order = sorted(p, key=lambda t: abs(-np.log(p[t]) - h))
    kept, total = [], 0.0
    for t in order:
        if total >= mass:
            break
        kept.append(t)
        total += p[t]
    bound = max(abs(-np.log(p[t]) - h) for t in kept)
    return {t for t in p if abs(-np.log(p[t]) - h) <= bound + 1e-12}


def eta_set(p: dict, eta: float) -> set:
    h = -sum(q * np.log(q) for q in p.values())
    thr = min(eta, np.sqrt(eta) * np.exp(-h))
    assert all(abs(q - thr) > 1e-3 for q in p.values())
    return {t for t in p if p[t] > thr} | {max(p, key=p.get)}


TRUNCATION_CASES = [
    ({"top_k": 1}, {4}),
    ({"top_k": 2}, {4, 5, 6}),  # tie at the k-th value kept
    ({"top_k": 4}, {4, 5, 6, 7}),
    ({"top_p": 0.25}, {4}),
    ({"top_p": 0.45}, {4, 5, 6}),  # {4, 5} reaches 0.5 >= 0.45; 6 ties with 5
    ({"top_p": 0.75}, {4, 5, 6, 7}),
    ({"typical_p": 0.3}, typical_set(P_FIXED, 0.3)),
    ({"typical_p": 0.9}, typical_set(P_FIXED, 0.9)),
    ({"min_p": 0.6}, {4, 5, 6}),  # p >= 0.18
    ({"min_p": 0.2}, {4, 5, 6, 7, 8}),  # p >= 0.06
    ({"epsilon": 0.06}, {4, 5, 6, 7, 8}),
    ({"epsilon": 0.5}, {4}),  # nothing above: the argmax is kept
    ({"eta": 0.1}, eta_set(P_FIXED, 0.1)),
    ({"eta": 0.01}, eta_set(P_FIXED, 0.01)),
    # top-p on the renormalized top-4 (0.35, 0.24, 0.24, 0.18): {4, 5, 6} reaches 0.82 >= 0.8;
    # on the unrenormalized p it would also keep 7
    ({"top_k": 4, "top_p": 0.8}, {4, 5, 6}),
    # min_tokens_to_keep (Hugging Face): at least m tokens, the most probable ones (ties at the
    # m-th kept), except typical-p, which keeps the m least deviating ones
    ({"top_k": 1, "min_tokens_to_keep": 3}, {4, 5, 6}),
    ({"top_p": 0.25, "min_tokens_to_keep": 2}, {4, 5, 6}),  # 6 ties with the 2nd
    ({"typical_p": 0.3, "min_tokens_to_keep": 3}, {5, 6, 7}),  # not the argmax 4
    ({"typical_p": 0.3, "min_tokens_to_keep": 4}, {4, 5, 6, 7}),
    ({"min_p": 0.9, "min_tokens_to_keep": 3}, {4, 5, 6}),
    ({"epsilon": 0.5, "min_tokens_to_keep": 4}, {4, 5, 6, 7}),
    ({"eta": 0.9, "min_tokens_to_keep": 4}, {4, 5, 6, 7}),  # eta alone: p > 0.168, {4, 5, 6}
]


@pytest.mark.parametrize(("knobs", "allowed"), TRUNCATION_CASES)
def test_truncation_sets(knobs, allowed):
    from seqgen.decoding import processors as proc

    # hand check of the reference: H = 1.7307; deviations 5, 6: 0.121, 7: 0.166, 4: 0.527, so
    # typical-p drops the most probable token 4
    assert typical_set(P_FIXED, 0.3) == {5, 6}
    assert eta_set(P_FIXED, 0.9) == {4, 5, 6}
    assert typical_set(P_FIXED, 0.9) == {4, 5, 6, 7, 8}
    x = fixed_logits()
    flags = proc.flags_from_cfg(lambda k: knobs.get(k, proc_defaults()[k]))
    knob_arrays = {k: jnp.float32(v) for k, v in {**proc_defaults(), **knobs}.items()}
    out = np.asarray(proc.truncate(jnp.asarray(x)[None], knob_arrays, flags))[0]
    kept = {int(t) for t in np.flatnonzero(np.isfinite(out))}
    assert kept == allowed
    np.testing.assert_array_equal(out[sorted(kept)], x[sorted(kept)])
    # sampling never leaves the set and (2000 draws) visits all of it
    params = jnp.asarray(np.tile(x, (10, 1)))
    res = sample(
        DecodeRequest(
            markov_step,
            params,
            jnp.zeros(1),
            max_len=1,
            vocab_size=10,
            key=0,
            num_samples=2000,
            cfg=NS(**knobs),
        )
    )
    emitted = set(res.tokens[0, :, 0].tolist()) - {PAD_ID}
    emitted |= {EOS_ID} if res.ended.any() else set()
    assert emitted == allowed


def proc_defaults() -> dict:
    from seqgen.decoding.common import DEFAULTS, TRACED_KNOBS

    static = ("top_k", "no_repeat_ngram_size", "min_tokens_to_keep")
    return {k: DEFAULTS[k] for k in (*TRACED_KNOBS, *static)}


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


# ----- keys, batch invariance, reproducibility -----


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sample", "stochastic_beam"])
def test_row_is_batch_invariant_and_reproducible(name):
    params = lstm_params(eos_bias=-1.0)
    cfg = NS(name=name, top_p=0.95, beam_size=3)
    kw = dict(cfg=cfg, max_len=10, vocab_size=9, num_samples=2, key=jax.random.key(42))
    big = decode(lstm_step, params, lstm_carry(3), PROMPTS, PROMPT_LENGTHS, **kw)
    again = decode(lstm_step, params, lstm_carry(3), PROMPTS, PROMPT_LENGTHS, **kw)
    for a, b in zip(jax.tree.leaves(big), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)  # bit for bit
    alone = decode(
        lstm_step, params, lstm_carry(1), PROMPTS[1:2], PROMPT_LENGTHS[1:2], prompt_ids=[1], **kw
    )
    np.testing.assert_array_equal(alone.tokens[0], big.tokens[1])
    np.testing.assert_allclose(alone.logprobs[0], big.logprobs[1], rtol=1e-5, atol=1e-6)
    # the samples of one prompt differ from each other
    assert not np.array_equal(big.tokens[0, 0], big.tokens[0, 1])


# ----- penalties -----


@pytest.mark.slow
def test_no_repeat_ngram_and_penalties():
    from seqgen.decoding import processors as proc

    table = np.full((8, 8), -1e9, np.float32)
    table[:, 4:] = np.log([0.7, 0.1, 0.1, 0.1])  # loves token 4
    table[:, EOS_ID] = np.log(1e-6)
    out = sample(
        DecodeRequest(
            markov_step,
            jnp.asarray(table),
            jnp.zeros(1),
            max_len=12,
            vocab_size=8,
            key=1,
            num_samples=50,
            cfg=NS(no_repeat_ngram_size=2),
        )
    )
    out = to_numpy(out)
    for i in range(50):
        seq = out.tokens[0, i, : out.lengths[0, i]].tolist()
        grams = list(zip(seq, seq[1:]))
        assert len(grams) == len(set(grams))
        assert len(seq) >= 5  # it never stops early: EOS has probability 1e-6
    # hand-computed penalties
    x = jnp.asarray([[2.0, -1.0, 0.5, 3.0]])
    counts = jnp.asarray([[1, 2, 0, 0]])
    np.testing.assert_allclose(
        proc.repetition_penalty(x, counts, jnp.float32(2.0)), [[1.0, -2.0, 0.5, 3.0]]
    )
    np.testing.assert_allclose(
        proc.presence_frequency_penalty(x, counts, jnp.float32(0.5), jnp.float32(0.25)),
        [[1.25, -2.0, 0.5, 3.0]],
    )
    hist = jnp.asarray([[5, 6, 5, 7, 5, 0, 0]])  # at t=5 the last token is 5: ban 6 and 7
    banned = proc.no_repeat_ngram(jnp.zeros((1, 8)), hist, jnp.int32(5), 2)
    assert set(np.flatnonzero(~np.isfinite(banned[0])).tolist()) == {6, 7}
    banned3 = proc.no_repeat_ngram(jnp.zeros((1, 8)), hist, jnp.int32(5), 3)  # (7, 5) -> none
    assert np.isfinite(banned3).all()
    # the repetition penalty with a huge theta makes greedy avoid every token it has produced
    g = greedy(
        DecodeRequest(
            markov_step,
            jnp.asarray(table),
            jnp.zeros(1),
            max_len=4,
            vocab_size=8,
            cfg=NS(repetition_penalty=1e6),
        )
    )
    assert sorted(g.tokens[0, 0].tolist()) == [4, 5, 6, 7]


# ----- compile count: traced knobs do not recompile -----

TRACES = {"n": 0}


def counting_step(params, carry, tokens):
    TRACES["n"] += 1  # runs only while tracing
    return markov_step(params, carry, tokens)


def test_traced_knobs_do_not_recompile():
    table = jnp.asarray(markov_table(9, 4))
    kw = dict(max_len=6, vocab_size=9, num_samples=4, key=0)
    sample(
        DecodeRequest(counting_step, table, jnp.zeros(2), cfg=NS(temperature=0.7, top_p=0.9), **kw)
    )
    after_first = TRACES["n"]
    assert after_first > 0
    sample(
        DecodeRequest(
            counting_step,
            table,
            jnp.zeros(2),
            cfg=NS(temperature=1.3, top_p=0.8, min_length=2),
            **kw,
        )
    )
    sample(
        DecodeRequest(counting_step, table, jnp.zeros(2), cfg=NS(temperature=0.0, top_p=0.5), **kw)
    )
    assert TRACES["n"] == after_first
    bcfg = dict(beam_size=2, length_penalty="gnmt")
    beam(
        DecodeRequest(
            counting_step, table, jnp.zeros(2), cfg=NS(alpha=0.6, **bcfg), max_len=6, vocab_size=9
        )
    )
    after_beam = TRACES["n"]
    beam(
        DecodeRequest(
            counting_step,
            table,
            jnp.zeros(2),
            cfg=NS(alpha=1.0, min_length=3, **bcfg),
            max_len=6,
            vocab_size=9,
        )
    )
    assert TRACES["n"] == after_beam


# ----- validation -----


@pytest.mark.parametrize(
    ("cfg", "kwargs", "needle"),
    [
        ({"name": "beam", "beam_size": 0}, {}, "beam_size"),
        ({"name": "sample", "top_p": 0.0}, {}, "top_p"),
        ({"name": "sample", "top_p": 1.5}, {}, "top_p"),
        ({"name": "sample", "top_k": -1}, {}, "top_k"),
        ({"name": "sample", "temperature": -0.1}, {}, "temperature"),
        ({"name": "sample", "typical_p": 0.0}, {}, "typical_p"),
        ({"name": "sample", "min_p": 1.5}, {}, "min_p"),
        ({"name": "sample", "epsilon": 1.0}, {}, "epsilon"),
        ({"name": "sample", "eta": -0.1}, {}, "eta"),
        ({"name": "sample", "repetition_penalty": 0.0}, {}, "repetition_penalty"),
        ({"name": "sample", "no_repeat_ngram_size": -1}, {}, "no_repeat_ngram_size"),
        ({"name": "beam", "length_penalty": "log"}, {}, "length_penalty"),
        ({"name": "beam", "min_length": -1}, {}, "min_length"),
        ({"name": "greedy", "min_length": 1.5}, {}, "min_length"),
        ({"name": "sample", "min_tokens_to_keep": 0}, {}, "min_tokens_to_keep"),
        ({"name": "sample", "min_tokens_to_keep": 11}, {}, "min_tokens_to_keep"),
        ({"name": "beam", "alpha": -1.0}, {}, "alpha"),
        ({"name": "diverse_beam", "beam_size": 4, "num_groups": 3}, {}, "num_groups"),
        ({"name": "diverse_beam", "diversity_penalty": -1.0}, {}, "diversity_penalty"),
        ({"name": "stochastic_beam", "temperature": 0.0}, {}, "temperature"),
        ({"name": "nucleus"}, {}, "decoder.name"),
        ({"name": "sample"}, {"max_len": 0}, "max_len"),
        ({"name": "sample"}, {"max_len": 2}, "max_len"),  # prompt of length 3 > max_len
        ({"name": "sample"}, {"num_samples": 0}, "num_samples"),
    ],
)
def test_validation_errors_name_the_knob(cfg, kwargs, needle):
    table = jnp.asarray(markov_table(10, 0))
    call = dict(cfg=NS(**cfg), max_len=8, vocab_size=10, num_samples=1, key=0)
    call.update(kwargs)
    with pytest.raises(UserError, match=needle):
        decode(markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, **call)


def test_top_k_at_or_above_the_vocabulary_is_no_truncation():
    # Hugging Face's rule: top_k >= V keeps every token; the output equals top_k=0 bit for bit
    table = jnp.asarray(markov_table(10, 0))
    call = dict(max_len=8, vocab_size=10, num_samples=4, key=3)
    off = decode(markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, cfg=NS(top_k=0), **call)
    for k in (10, 11, 640):
        out = decode(
            markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, cfg=NS(top_k=k), **call
        )
        np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(off.tokens))
        np.testing.assert_array_equal(
            np.asarray(out.processed_logprobs), np.asarray(off.processed_logprobs)
        )


def test_decoders_dict_and_bad_prompts():
    assert set(DECODERS) == {
        "greedy",
        "sample",
        "beam",
        "stochastic_beam",
        "diverse_beam",
        "exact",
        "mbr",
    }
    table = jnp.asarray(markov_table(10, 0))
    bad = PROMPTS.copy()
    bad[0, 0] = 10
    with pytest.raises(UserError, match="vocabulary"):
        decode(
            markov_step,
            table,
            jnp.zeros(3),
            bad,
            PROMPT_LENGTHS,
            cfg=None,
            max_len=8,
            vocab_size=10,
        )
    with pytest.raises(UserError, match="prompts"):
        decode(
            markov_step,
            table,
            jnp.zeros(2),
            PROMPTS,
            PROMPT_LENGTHS,
            cfg=None,
            max_len=8,
            vocab_size=10,
        )


def test_top_p_and_typical_match_the_sorted_prefix_definition():
    """`keep_by_mass` (every method: 2-ary and 16-ary search, sort) keeps exactly the
    sorted-prefix sets, ties included."""
    from seqgen.decoding import processors as proc

    rng = np.random.default_rng(0)
    x = rng.integers(-4, 4, size=(64, 40)).astype(np.float32)  # many ties
    x[:, :3] = -np.inf
    lp = log_softmax64(np.where(np.isfinite(x), x, -1e30))
    p = np.exp(lp)
    h = -(p * lp).sum(-1, keepdims=True)
    dev = np.where(np.isfinite(x), np.abs(-lp - h), np.inf)

    def prefix_set(order_key: np.ndarray, mass: float) -> np.ndarray:  # larger key = first
        keep = np.zeros_like(order_key, bool)
        for r in range(len(order_key)):
            order = np.argsort(-order_key[r], kind="stable")
            before = np.concatenate([[0.0], np.cumsum(p[r, order])[:-1]])
            bound = order_key[r, order][before < mass].min()
            keep[r] = order_key[r] >= bound
        return keep

    for method in proc.NUCLEUS_METHODS:
        for mass in (0.1, 0.5, 0.77, 0.95):
            m = jnp.float32(mass)
            got_p = np.isfinite(np.asarray(proc.top_p(jnp.asarray(x), m, method=method)))
            np.testing.assert_array_equal(got_p, prefix_set(x, mass) & np.isfinite(x), method)
            got_t = np.isfinite(np.asarray(proc.typical_p(jnp.asarray(x), m, method=method)))
            np.testing.assert_array_equal(got_t, prefix_set(-dev, mass) & np.isfinite(x), method)


def test_nucleus_methods_give_the_same_sets():
    """top-p's ways to find its set (2-ary and 16-ary search over the keys' bit patterns, one
    sort per row) keep the same tokens, on continuous logits and on logits with many ties."""
    from seqgen.decoding import processors as proc

    rng = np.random.default_rng(1)
    cont = rng.normal(size=(128, 50)).astype(np.float32) * 3.0
    ties = rng.integers(-3, 3, size=(128, 50)).astype(np.float32)
    ties[:, :3] = -np.inf
    for x in (cont, ties):
        x = jnp.asarray(x)
        for mass in (0.05, 0.3, 0.5, 0.9, 0.99):
            m = jnp.float32(mass)
            a = np.asarray(proc.top_p(x, m, method="bisect"))
            for other in set(proc.NUCLEUS_METHODS) - {"bisect"}:
                b = np.asarray(proc.top_p(x, m, method=other))
                np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), other)
            assert 0 < np.isfinite(a).sum() < np.isfinite(np.asarray(x)).sum()
