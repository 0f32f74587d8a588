"""Greedy and ancestral sampling (`decoding/sampling.py`): greedy equals sample at t=0, the
sampled distribution equals the model's, rows are batch-invariant, traced knobs do not
recompile."""

from __future__ import annotations

from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from seqgen.decoding import (
    DecodeRequest,
    beam,
    decode,
    greedy,
    sample,
)
from seqgen.tokens import EOS_ID, PAD_ID
from tests.helpers_decoding import (
    PROMPT_LENGTHS,
    PROMPTS,
    log_softmax64,
    lstm_carry,
    lstm_params,
    lstm_step,
    markov_step,
    markov_table,
    seq_logprob,
    to_numpy,
)

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
