"""decoder=exact: equals brute force (with prompts of different lengths), equals the DPFSA's
Dijkstra mode, never scores below beam search, and says when the budget stopped it."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.data.synthetic import DPFSA
from seqgen.decoding import DecodeRequest, beam, decode
from seqgen.metrics.search import beam_error_rate, exact_proven_rate
from seqgen.tokens import BOS_ID, EOS_ID
from tests.helpers_decoding import lstm_carry, lstm_params, lstm_step

V, T = 7, 6  # symbols 4, 5, 6 (PAD, BOS, UNK impossible) + EOS
PROMPTS = np.array([[4, 5, 6], [6, 0, 0], [0, 0, 0]], np.int32)
PROMPT_LENGTHS = np.array([3, 1, 0], np.int32)
EXACT = {"name": "exact", "max_expansions": 400, "expansions_per_step": 8, "beam_size": 2}


def score_all(params, prompt: list[int], conts: list[tuple]) -> np.ndarray:
    """log p(cont + EOS | prompt) of every continuation under the LSTM, one batched pass."""
    n = len(conts)
    width = len(prompt) + max(len(c) for c in conts) + 1
    seqs = np.full((n, width), EOS_ID, np.int32)
    for i, c in enumerate(conts):
        seqs[i, : len(prompt) + len(c)] = list(prompt) + list(c)
    total = np.zeros(n)
    carry, tok = lstm_carry(n), jnp.full((n,), BOS_ID, jnp.int32)
    for t in range(width):
        carry, logits = lstm_step(params, carry, tok)
        lp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), -1), np.float64)
        scored = (t >= len(prompt)) & (t <= np.array([len(prompt) + len(c) for c in conts]))
        total += np.where(scored, lp[np.arange(n), seqs[:, t]], 0.0)
        tok = jnp.asarray(seqs[:, t])
    return total


@pytest.mark.slow
def test_exact_equals_brute_force_and_beats_every_beam():
    params = lstm_params(v=V, seed=2, eos_bias=-1.5)
    out = jax.tree.map(
        np.asarray,
        decode(
            lstm_step,
            params,
            lstm_carry(3),
            PROMPTS,
            PROMPT_LENGTHS,
            cfg=EXACT,
            max_len=T,
            vocab_size=V,
        ),
    )
    assert out.proven.all() and (out.expansions <= EXACT["max_expansions"]).all()
    for b in range(3):
        pl = int(PROMPT_LENGTHS[b])
        prompt = PROMPTS[b, :pl].tolist()
        conts = [
            c for n in range(T - pl) for c in itertools.product((4, 5, 6), repeat=n)
        ]  # every continuation whose EOS fits in max_len
        scores = score_all(params, prompt, conts)
        best = conts[int(np.argmax(scores))]
        length = int(out.lengths[b, 0])
        assert out.ended[b, 0]
        assert out.tokens[b, 0, :length].tolist() == prompt + list(best)
        assert out.tokens[b, 0, length] == EOS_ID
        assert out.scores[b, 0] == pytest.approx(scores.max(), abs=1e-4)
        # the per-token log-probs are the model's and sum to the score
        total = out.logprobs[b, 0].sum() + out.eos_logprob[b, 0]
        assert total == pytest.approx(out.scores[b, 0], abs=1e-4)
        # the mode is a real gap over the runner-up here, so the test can tell them apart
        assert np.sort(scores)[-2] < scores.max() - 1e-3
    for k in (1, 3):
        bo = beam(
            DecodeRequest(
                lstm_step,
                params,
                lstm_carry(3),
                PROMPTS,
                PROMPT_LENGTHS,
                cfg={"beam_size": k},
                max_len=T,
                vocab_size=V,
            )
        )
        raw = np.where(
            np.asarray(bo.ended[:, 0]),
            np.asarray(bo.logprobs[:, 0]).sum(-1) + np.asarray(bo.eos_logprob[:, 0]),
            -np.inf,
        )
        assert (out.scores[:, 0] >= raw - 1e-5).all()


@pytest.mark.slow
def test_exact_is_the_dpfsa_mode_and_reports_the_budget():
    rows = []
    for seed in range(3):
        d = DPFSA.random(5, 3, seed, stop_prob=0.2)
        out = decode(
            d.step_fn,
            d.params(),
            d.init_carry(1),
            cfg=EXACT,
            max_len=16,
            vocab_size=d.vocab_size,
        )
        mode, mode_lp = d.mode()
        assert bool(out.proven[0])
        n = int(out.lengths[0, 0])
        assert np.asarray(out.tokens[0, 0, :n]).tolist() == mode
        assert float(out.scores[0, 0]) == pytest.approx(mode_lp, abs=1e-4)
        rows.append(float(out.scores[0, 0]))
    # a budget of one expansion cannot prove a mode that needs more: not proven, and still
    # no worse than the beam it started from
    d = DPFSA.random(5, 3, 0, stop_prob=0.2)
    tight = decode(
        d.step_fn,
        d.params(),
        d.init_carry(1),
        cfg={**EXACT, "max_expansions": 1},
        max_len=16,
        vocab_size=d.vocab_size,
    )
    assert int(tight.expansions[0]) == 1 and not bool(tight.proven[0])
    assert float(tight.scores[0, 0]) <= rows[0] + 1e-6


def test_search_metrics_hand_cases():
    proven = np.array([True, True, False, True])
    mode = np.array([-1.0, -2.0, -3.0, -4.0])
    beam_best = np.array([-1.0, -2.5, -9.0, -np.inf])  # equal, below, unproven, none ended
    assert exact_proven_rate(proven) == 0.75
    assert beam_error_rate(beam_best, mode, proven) == pytest.approx(2 / 3)
    assert beam_error_rate(mode + 1e-6, mode, proven) == 0.0  # float noise is no error
    assert np.isnan(beam_error_rate(beam_best, mode, np.zeros(4, bool)))
