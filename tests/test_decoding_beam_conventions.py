"""Beam search's toolkit conventions (`eos_rule`, `finalize`, `early_stop`,
`force_eos_at_max_len`): a hand-built case for each, where it changes the result, and every
combination against a plain-Python beam search that follows the conventions' definitions."""

from __future__ import annotations

import numpy as np
import pytest

from seqgen.tokens import EOS_ID, PAD_ID
from tests.helpers_decoding import log_softmax64, markov_beam

V = 6  # PAD, BOS, EOS, UNK, 4, 5


def rows(probs: dict[int, dict[int, float]]) -> np.ndarray:
    """A [V, V] table of log-probs; unlisted transitions get 1e-12 (not -inf, so every row's
    log-softmax is defined)."""
    table = np.full((V, V), np.log(1e-12))
    for prev, p in probs.items():
        for tok, q in p.items():
            table[prev, tok] = np.log(q)
    return table.astype(np.float32)


# The t5x / praxis case: the same logits [-inf, -inf, -1.0 (EOS), -inf, -0.9, -0.1] at every
# step; log-probs EOS -1.518, 4 -1.418, 5 -0.618 (see test_beam_admits_every_eos_candidate_among_2k)
T5X = np.tile(np.array([-np.inf, -np.inf, -1.0, -np.inf, -0.9, -0.1], np.float32), (V, 1))
LSE = np.log(np.exp(-1.0) + np.exp(-0.9) + np.exp(-0.1))
EOS_LP, FOUR, FIVE = -1.0 - LSE, -0.9 - LSE, -0.1 - LSE


def test_eos_rule_top_k_drops_an_eos_ranked_at_k():
    """K = 2, max_len 3. Step 0's candidates are 5, 4, EOS: EOS ranks 2 = K, so Hugging Face's
    and fairseq's rule leaves it out; at step 1 `5 EOS` ranks 3 (after 55 and the tie 54/45):
    out too. Nothing finishes, and the two best cut hypotheses are 5 5 5 and 5 5 4 (the lower
    index wins the 554/545 tie). seqgen's default (t5x) returns [EOS] first."""
    out = markov_beam(T5X, 3, beam_size=2, eos_rule="top_k")
    np.testing.assert_allclose(out.scores[0], [3 * FIVE, 2 * FIVE + FOUR], rtol=1e-6)
    assert out.tokens[0].tolist() == [[5, 5, 5], [5, 5, 4]]
    np.testing.assert_array_equal(out.ended[0], [False, False])
    default = markov_beam(T5X, 3, beam_size=2)
    np.testing.assert_allclose(default.scores[0], [EOS_LP, 3 * FIVE], rtol=1e-6)


def test_force_eos_at_max_len_ends_every_hypothesis():
    """fairseq's rule: the last position allows only EOS. With t5x's EOS rule the pool already
    holds [EOS] (-1.518) and [5 EOS] (-2.137, admitted at step 1 as the 4th of 2K = 4), which
    beat the forced 5 5 EOS (-2.755): the cut 5 5 5 of the default is gone. With the top-K EOS
    rule as well (fairseq), only the forced endings enter: 5 5 EOS and 5 4 EOS (-3.555)."""
    out = markov_beam(T5X, 3, beam_size=2, force_eos_at_max_len=True)
    np.testing.assert_allclose(out.scores[0], [EOS_LP, FIVE + EOS_LP], rtol=1e-6)
    assert out.tokens[0].tolist() == [[EOS_ID, PAD_ID, PAD_ID], [5, EOS_ID, PAD_ID]]
    np.testing.assert_array_equal(out.ended[0], [True, True])
    np.testing.assert_array_equal(out.lengths[0], [0, 1])
    both = markov_beam(T5X, 3, beam_size=2, force_eos_at_max_len=True, eos_rule="top_k")
    np.testing.assert_allclose(both.scores[0], [2 * FIVE + EOS_LP, FIVE + FOUR + EOS_LP], rtol=1e-6)
    assert both.tokens[0].tolist() == [[5, 5, EOS_ID], [5, 4, EOS_ID]]
    np.testing.assert_array_equal(both.lengths[0], [2, 2])


def test_finalize_finished_first_puts_every_finished_hypothesis_first():
    """Average normalization, K = 2, max_len 6, p(4) = 0.9, p(EOS) = 0.06 after every token:
    by score (Hugging Face) the cut 4 4 4 4 4 4 (-0.105) beats 4 4 4 4 4 EOS (-0.557); t5x's
    and praxis's finalization returns finished hypotheses first: 44444 EOS, then 4444 EOS
    ((4 log 0.9 + log 0.06) / 5 = -0.647), and no cut one."""
    p = {EOS_ID: 0.06, 4: 0.9, 5: 0.04}
    table = rows({prev: p for prev in range(V)})
    lp4, lpe = np.log(0.9), np.log(0.06)
    out = markov_beam(table, 6, beam_size=2, length_penalty="average", finalize="finished_first")
    np.testing.assert_allclose(out.scores[0], [(5 * lp4 + lpe) / 6, (4 * lp4 + lpe) / 5], rtol=1e-5)
    assert out.tokens[0].tolist() == [[4] * 5 + [EOS_ID], [4] * 4 + [EOS_ID, PAD_ID]]
    np.testing.assert_array_equal(out.ended[0], [True, True])
    default = markov_beam(table, 6, beam_size=2, length_penalty="average")
    np.testing.assert_array_equal(default.ended[0], [False, True])


def test_early_stop_k_finished_returns_the_first_k_finished():
    """K = 1, no normalization. From the root p(EOS) = 0.3, p(4) = 0.7; after 4, p(EOS) = 0.99.
    Step 0 fills the pool with [EOS] (log 0.3 = -1.204); fairseq stops there. The exact rule
    sees the live 4 (log 0.7 = -0.357) can still win and returns 4 EOS (log 0.693 = -0.367)."""
    table = rows({1: {EOS_ID: 0.3, 4: 0.7}, 4: {EOS_ID: 0.99, 4: 0.01}, 5: {EOS_ID: 1.0}})
    lp = log_softmax64(table)
    out = markov_beam(table, 4, beam_size=1, early_stop="k_finished")
    np.testing.assert_allclose(out.scores[0], [lp[1, EOS_ID]], rtol=1e-5)
    assert out.tokens[0].tolist() == [[EOS_ID, PAD_ID, PAD_ID, PAD_ID]]
    exact = markov_beam(table, 4, beam_size=1)
    np.testing.assert_allclose(exact.scores[0], [lp[1, 4] + lp[4, EOS_ID]], rtol=1e-5)
    assert exact.tokens[0, 0, :2].tolist() == [4, EOS_ID]


NORM = {"none": lambda n, a: 1.0, "average": lambda n, a: float(n), "power": lambda n, a: n**a}


def reference_beam(lp, prompt, max_len, k, length_penalty, alpha, conv) -> list:
    """Beam search in plain Python, float64, following the conventions' definitions: the 2K
    best candidates; EOS ones enter the pool of K finished (all of them, or those ranked < K);
    the K best non-EOS stay live; at the last position only EOS when forced; with k_finished
    the search ends once K have finished and returns only those; finalization by score, or
    finished first. No early stopping otherwise (the exact rule must not change the result).
    Returns [(score, ended)] best first, padded with (-inf, False) to K."""
    norm = NORM[length_penalty]
    budget, v = max_len - len(prompt), lp.shape[0]
    live, fin = [(0.0, prompt[-1] if prompt else 1)], []
    for n in range(budget):
        last = conv["force_eos_at_max_len"] and n == budget - 1
        cands = [
            (s + lp[prev, tok], tok)
            for s, prev in live
            for tok in range(v)
            if (tok == EOS_ID) or not last
        ]
        top = sorted(cands, key=lambda c: -c[0])[: 2 * k]
        admit = [
            c[0] / norm(n + 1, alpha)
            for i, c in enumerate(top)
            if c[1] == EOS_ID and (conv["eos_rule"] == "any" or i < k)
        ]
        fin = sorted(fin + admit, reverse=True)[:k]
        live = [c for c in top if c[1] != EOS_ID][:k]
        if conv["early_stop"] == "k_finished" and len(fin) == k:
            live = []
            break
    done = [(s, True) for s in fin]
    cut = [(s / norm(budget, alpha), False) for s, _ in live]
    if conv["finalize"] == "score":
        out = sorted(done + cut, key=lambda c: -c[0])
    else:
        out = sorted(done, key=lambda c: -c[0]) + sorted(cut, key=lambda c: -c[0])
    return (out + [(-np.inf, False)] * k)[:k]


SEQGEN = dict(eos_rule="any", finalize="score", early_stop="exact", force_eos_at_max_len=False)
HF = dict(SEQGEN, eos_rule="top_k", early_stop="k_finished")
FAIRSEQ = dict(HF, force_eos_at_max_len=True)
T5X_CONV = dict(SEQGEN, finalize="finished_first")


@pytest.mark.slow
@pytest.mark.parametrize(
    "conv",
    [
        dict(SEQGEN, eos_rule="top_k"),
        dict(SEQGEN, early_stop="k_finished"),
        dict(SEQGEN, force_eos_at_max_len=True),
        T5X_CONV,
        HF,
        FAIRSEQ,
        dict(FAIRSEQ, finalize="finished_first"),
    ],
    ids=["top_k_eos", "k_finished", "force_eos", "t5x", "hf", "fairseq", "all"],
)
def test_conventions_match_their_definition(conv):
    """K = 3 over a random Markov chain with a likely EOS, prompts of 3, 1 and 0 tokens: the
    scores and the finished/cut flags equal the plain-Python search that follows the
    definitions, for two normalizers (alpha is traced: one compile per convention)."""
    rng = np.random.default_rng(3)
    table = (rng.normal(size=(V, V)) * 2.0).astype(np.float32)
    table[:, EOS_ID] += 0.5
    lp = log_softmax64(table)
    prompts = np.array([[4, 5, 4], [5, 0, 0], [0, 0, 0]], np.int32)
    plens = np.array([3, 1, 0], np.int32)
    for length_penalty, alpha in (("none", 0.0), ("power", 1.3)):
        out = markov_beam(
            table, 8, prompts, plens, beam_size=3, length_penalty=length_penalty, alpha=alpha,
            **conv,
        )  # fmt: skip
        for i, plen in enumerate(plens):
            want = reference_beam(lp, prompts[i, :plen].tolist(), 8, 3, length_penalty, alpha, conv)
            np.testing.assert_allclose(out.scores[i], [s for s, _ in want], rtol=1e-5)
            np.testing.assert_array_equal(out.ended[i], [e for _, e in want])
