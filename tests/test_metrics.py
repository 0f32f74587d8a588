"""Metrics: hand-computed values (worked out in the comments), Self-BLEU == nltk, the
Holtzman repetition rule, Zipf on exact power laws, ABC parse and bar checks."""

import logging
import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from seqgen.data.synthetic import DPFSA
from seqgen.errors import UserError
from seqgen.metrics import (
    Generations,
    abc_rates,
    bars_ok,
    compute,
    decode_output_inputs,
    distinct_n,
    end_repeats,
    generation_perplexity,
    is_repetition,
    mode_found_rate,
    ngram_entropy,
    parse_abc,
    perplexity_from_nll,
    rep_l,
    repetition_percent,
    self_bleu,
    seq_rep_n,
    unique_sequences,
    zipf_coefficient,
)
from seqgen.metrics._packed import ngram_ids, pack
from seqgen.metrics.abc import call_with_deadline
from seqgen.tokens import NUM_SPECIAL, UNK_ID

LN = math.log

# ---------------------------------------------------------------- perplexity


def test_perplexity_from_nll_hand_computed():
    # mean NLL = 4 ln 2 / 2 = 2 ln 2 -> ppl = e^(2 ln 2) = 4, bits = 2
    out = perplexity_from_nll(4 * LN(2), 2)
    assert out["ppl"] == pytest.approx(4.0, rel=1e-12)
    assert out["bits"] == pytest.approx(2.0, rel=1e-12)
    assert math.isnan(perplexity_from_nll(0.0, 0)["ppl"])


def test_generation_perplexity_pools_tokens_and_counts_eos_only_when_ended():
    # seq 0: p = .5, .25 then EOS (p = .5, ended); seq 1: p = .5, cut at max_len (its
    # eos entry .1 must be ignored). Pooled: 4 tokens, product 1/32 -> ppl = 32^(1/4).
    lps = [np.log([0.5, 0.25]), np.log([0.5])]
    ended = [True, False]
    eos = np.log([0.5, 0.1])
    want = 32**0.25
    got = generation_perplexity(lps, ended=ended, eos_logprob=eos)
    assert got == pytest.approx(want, rel=1e-12)
    # the same in the padded [N, T] layout; the pad value 7.0 must not be read
    padded = np.array([[LN(0.5), LN(0.25)], [LN(0.5), 7.0]])
    got = generation_perplexity(padded, lengths=[2, 1], ended=ended, eos_logprob=eos)
    assert got == pytest.approx(want, rel=1e-12)
    # pooled, not a mean of per-sequence perplexities ((16^(1/3) + 2) / 2 = 2.26 != 2.38)
    with pytest.raises(UserError):
        generation_perplexity(lps, ended=ended)  # ended sequences need eos_logprob


# ---------------------------------------------------------------- n-gram plumbing


def test_ngram_ids_do_not_cross_sequences():
    packed = pack([[5, 6], [7, 8], [5, 6, 7]])
    ids2, starts2 = ngram_ids(packed, 2)[1]
    # bigrams: (5,6) (7,8) (5,6) (6,7) -- (6,7) across seq 0/1 and (8,5) must not appear
    assert starts2.tolist() == [0, 2, 4, 5]
    assert ids2[0] == ids2[2] and len(set(ids2.tolist())) == 3
    assert np.array_equal(pack(np.array([[5, 6, 0], [7, 8, 9]]), [2, 3]).flat, [5, 6, 7, 8, 9])


# ---------------------------------------------------------------- diversity


def test_distinct_n_hand_computed():
    seqs = [[5, 6, 5], [5, 6]]  # 5 tokens in all
    # unigrams {5, 6}: 2/5; bigrams (5,6) (6,5) (5,6): 2 distinct / 5; trigram (5,6,5): 1/5
    assert distinct_n(seqs, 1) == pytest.approx(2 / 5)
    assert distinct_n(seqs, 2) == pytest.approx(2 / 5)
    assert distinct_n(seqs, 3) == pytest.approx(1 / 5)
    assert distinct_n(seqs, 4) == 0.0
    # boundaries: (6, 7) must not be counted -> 2 bigrams / 4 tokens, not 3/4
    assert distinct_n([[5, 6], [7, 8]], 2) == pytest.approx(0.5)


def test_ngram_entropy_hand_computed():
    # 4-grams of 5 6 7 8 5 6 7 8: 5678, 6785, 7856, 8567, 5678 -> probs .4, .2, .2, .2
    want = -(0.4 * LN(0.4) + 3 * 0.2 * LN(0.2))
    assert ngram_entropy([[5, 6, 7, 8, 5, 6, 7, 8]], 4) == pytest.approx(want, rel=1e-12)
    # pooled over sequences: two different 4-grams, each once -> ln 2
    assert ngram_entropy([[5, 6, 7, 8], [5, 6, 7, 9], [5]], 4) == pytest.approx(LN(2))


def test_unique_sequences_hand_computed():
    # {56, 56, 65, ()} -> 3 distinct of 4
    assert unique_sequences([[5, 6], [5, 6], [6, 5], []]) == pytest.approx(0.75)


@pytest.mark.parametrize("exponent,top", [(1.0, 6), (2.0, 6), (1.0, 3)])
def test_zipf_on_exact_power_law(exponent, top):
    # counts 3600 / r^s for ranks 1..6 are exact integers for s = 1, 2
    counts = [round(3600 / r**exponent) for r in range(1, 7)]
    seq = np.concatenate([np.full(c, 4 + r) for r, c in enumerate(counts)])
    if top == 3:  # a tail that breaks the law is cut off by `top`
        seq = np.concatenate([seq[: sum(counts[:3])], np.arange(20, 40)])
    rng = np.random.default_rng(0)
    assert zipf_coefficient([rng.permutation(seq)], top=top) == pytest.approx(exponent, rel=1e-9)


def test_self_bleu_hand_computed():
    # A = 5 6 7 8, B = 5 6 7 9, each scored against the other:
    # p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 matches -> method1: 0.1 / 1; equal lengths: BP = 1
    # BLEU = (3/4 * 2/3 * 1/2 * 0.1)^(1/4) = 0.025^(1/4) for both -> mean 0.025^(1/4)
    seqs = [[5, 6, 7, 8], [5, 6, 7, 9]]
    assert self_bleu(seqs) == pytest.approx(0.025**0.25, rel=1e-12)
    sm = SmoothingFunction().method1
    assert sentence_bleu([seqs[1]], seqs[0], smoothing_function=sm) == pytest.approx(
        0.025**0.25, rel=1e-12
    )


def test_self_bleu_clips_against_max_over_references():
    seqs = [[5, 5, 5], [5], [5, 5]]
    # hyp 0 = 5 5 5, refs [5] and [5 5]: unigram clipped min(3, max(1, 2)) = 2 -> 2/3;
    # bigram (5,5) x2 vs max ref count 1 -> 1/2; trigram 0/1 and no 4-gram (denominator 1)
    # -> 0.1 each; closest ref length 2 < 3 -> BP = 1. BLEU = (2/3 * 1/2 * 0.1 * 0.1)^(1/4)
    b0 = (2 / 3 * 1 / 2 * 0.1 * 0.1) ** 0.25
    # hyp 1 = 5, refs [5 5 5], [5 5]: p1 = 1, p2..p4 = 0.1; closest length 2 -> BP = e^(1-2)
    b1 = math.exp(-1) * 0.001**0.25
    # hyp 2 = 5 5, refs [5 5 5], [5]: lengths 3 and 1 tie at distance 1 -> the shorter, 1,
    # so BP = 1 (the longer would give exp(1 - 3/2)); p1 = 1, p2 = 1/1, p3 = p4 = 0.1
    b2 = 0.01**0.25
    hyps, scores = self_bleu(seqs, return_scores=True)
    assert hyps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(scores, [b0, b1, b2], rtol=1e-12)
    assert self_bleu(seqs) == pytest.approx((b0 + b1 + b2) / 3, rel=1e-12)
    assert math.isnan(self_bleu([[5, 6]]))  # no references


def _nltk_self_bleu_scores(seqs, hyps):
    sm = SmoothingFunction().method1
    return [
        sentence_bleu([s for j, s in enumerate(seqs) if j != h], seqs[h], smoothing_function=sm)
        for h in hyps
    ]


def test_self_bleu_equals_nltk_on_random_cases():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(2, 14))
        vocab = int(rng.integers(2, 6))  # small vocabularies: many partial matches
        seqs = [rng.integers(4, 4 + vocab, size=rng.integers(0, 16)).tolist() for _ in range(n)]
        hyps, scores = self_bleu(
            seqs, num_samples=int(rng.integers(1, n + 1)), seed=trial, return_scores=True
        )
        np.testing.assert_allclose(scores, _nltk_self_bleu_scores(seqs, hyps), rtol=0, atol=1e-9)


def test_self_bleu_subset_is_seeded_and_uses_all_other_references():
    rng = np.random.default_rng(1)
    seqs = [rng.integers(4, 8, size=10).tolist() for _ in range(12)]
    h1, s1 = self_bleu(seqs, num_samples=5, seed=3, return_scores=True)
    h2, _ = self_bleu(seqs, num_samples=5, seed=3, return_scores=True)
    assert h1.size == 5 and np.array_equal(h1, h2)
    np.testing.assert_allclose(s1, _nltk_self_bleu_scores(seqs, h1), rtol=0, atol=1e-9)
    assert self_bleu(seqs, num_samples=5, seed=3) == pytest.approx(float(np.mean(s1)))


# ---------------------------------------------------------------- repetition


def test_seq_rep_4_hand_computed():
    # 5678 5678: five 4-grams, 4 unique -> 1 - 4/5 = 0.2; 5678: 0; [5, 6] has no 4-gram
    # and is left out -> mean(0.2, 0) = 0.1
    assert seq_rep_n([[5, 6, 7, 8, 5, 6, 7, 8], [5, 6, 7, 8], [5, 6]], 4) == pytest.approx(0.1)
    assert math.isnan(seq_rep_n([[5, 6]], 4))


def test_rep_l_hand_computed():
    # seq 5 6 5 7 5: tokens at t=2 and t=4 repeat a 5 seen 2 steps back; seq 6 6: t=1 repeats
    # the token 1 step back. 7 tokens pooled: rep/1 = 1/7, rep/2 = 3/7 (rep/16 the same).
    out = rep_l([[5, 6, 5, 7, 5], [6, 6]], windows=(1, 2, 16))
    assert out[1] == pytest.approx(1 / 7)
    assert out[2] == pytest.approx(3 / 7)
    assert out[16] == pytest.approx(3 / 7)
    assert rep_l([[5], [5]], windows=(16,))[16] == 0.0  # other sequences do not count


def _holtzman_is_repetition(gen, max_n=90):
    """The rule of Holtzman et al.'s `degen/metrics/repetition.py`, rewritten independently
    with plain Python lists, to check the vectorized version against."""
    rev = list(reversed(gen))
    copies = []
    for n in range(1, max_n + 1):
        c = 1
        while len(rev[n * c : n * (c + 1)]) == n and rev[n * c : n * (c + 1)] == rev[:n]:
            c += 1
        copies.append(c)
    best = copies.index(max(copies))
    return copies, copies[best] > 1 and (best + 1 >= 3 or copies[best] > 50)


@pytest.mark.parametrize(
    "seq,want",
    [
        ([5, 6, 7, 5, 6, 7], True),  # block of 3, 2 copies
        ([9, 9, 5, 6, 7, 5, 6, 7, 5, 6, 7], True),  # prefix, then 3 copies
        ([5, 6, 7, 5, 6, 7, 5], True),  # ends with "6 7 5" twice
        ([5, 6, 7, 8], False),  # no copy
        ([5] * 4, False),  # smallest best block is 1 token with 4 copies: too short
        ([5] * 6, False),  # n=1: 6 copies beats n=3: 2 copies -> still 1-token block
        ([5] * 50, False),  # 50 copies of one token: not more than 50
        ([5] * 51, True),  # more than 50 copies
        ([5, 6] * 25, False),  # 2-token block, 25 copies
        ([5, 6] * 51, True),  # 2-token block, 51 copies
        ([], False),
    ],
)
def test_rep_pct_rule_cases(seq, want):
    assert bool(is_repetition([seq])[0]) is want
    assert _holtzman_is_repetition(seq)[1] is want


def test_rep_pct_matches_reference_rule_on_random_sequences():
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(200):
        block = rng.integers(4, 7, size=rng.integers(1, 8)).tolist()
        prefix = rng.integers(4, 7, size=rng.integers(0, 20)).tolist()
        length = int(rng.integers(0, 150))
        loop = (prefix + block * 200)[:length]
        seqs.append(loop if rng.random() < 0.7 else rng.integers(4, 6, size=length).tolist())
    counts = end_repeats(seqs)
    flags = is_repetition(seqs)
    for seq, c, f in zip(seqs, counts, flags):
        ref_counts, ref_flag = _holtzman_is_repetition(seq)
        assert c.tolist() == ref_counts and bool(f) == ref_flag
    assert repetition_percent(seqs) == pytest.approx(100 * np.mean(flags))
    assert repetition_percent([[5, 6, 7, 5, 6, 7], [5, 6]]) == pytest.approx(50.0)


# ---------------------------------------------------------------- length, oracle


def test_length_metrics_hand_computed():
    # lengths 2 and 4: mean 3, population std sqrt(((2-3)^2 + (4-3)^2) / 2) = 1; one of two ended
    out = compute(Generations([[5, 6], [5, 6, 7, 8]], ended=[True, False]))
    assert (out["length/mean"], out["length/std"], out["length/eos_rate"]) == (3.0, 1.0, 0.5)


class FakeOracle:
    """Every symbol has p = 1/2 and EOS has p = 1/4 in the one state 0 (not a real
    distribution; enough to check the reductions); a prompt containing UNK (3) is impossible.
    Mode: 5 6 with log-prob -1.2."""

    def state_after(self, prefix):
        return None if UNK_ID in prefix else 0

    def logprob_batch(self, tokens, lengths, ended, start):
        tokens, lengths, ended = np.asarray(tokens), np.asarray(lengths), np.asarray(ended)
        assert tokens.ndim == 2 and tokens.shape[0] == lengths.shape[0] == ended.shape[0]
        assert (np.asarray(start) == 0).all()
        return lengths * LN(0.5) + ended * LN(0.25)

    def entropy(self, start):
        return 0.9

    def expected_length(self, start):
        return 1.0

    def mode(self, start):
        return [5, 6], -1.2


def test_oracle_metrics_hand_computed():
    # seq 5 6 ended: 2 ln .5 + ln .25 = ln(1/16); seq 5 cut: ln .5. 4 tokens (EOS once):
    # nll = ln 32 / 4 = (5/4) ln 2, ppl = 2^(5/4)
    out = compute(
        Generations(
            [[5, 6], [5]],
            ended=[True, False],
            oracle=FakeOracle(),
            best_sequences=[[5, 6], [5, 6], [5], [5, 6, 7]],
            best_ended=[True, False, True, True],
        )
    )
    assert out["oracle/nll"] == pytest.approx(1.25 * LN(2))
    assert out["oracle/ppl"] == pytest.approx(2**1.25)
    assert out["oracle/entropy"] == 0.9
    assert out["oracle/mode_logprob"] == -1.2
    assert "oracle/impossible_prompt_rate" not in out  # no prompts given
    # [5 6] ended = mode; [5 6] not ended is only a prefix; [5] and [5 6 7] differ
    assert out["search/mode_found"] == pytest.approx(1 / 4)
    # an oracle whose mode lists its EOS: the EOS is ignored
    eos_mode = FakeOracle()
    eos_mode.mode = lambda start: ([5, 6, 2], -1.2)
    assert mode_found_rate(eos_mode, [[5, 6], [5]], [True, True]) == 0.5


def test_oracle_metrics_condition_on_each_prompt():
    # symbols a = 4, b = 5. State 0: a -> 1 (.5), b -> 0 (.3), stop .2;
    # state 1: a -> 1 (.1), b -> 0 (.3), stop .6. Prompt [a] leads to 1, [] to 0, [UNK] nowhere.
    d = DPFSA(np.array([[1, 0], [1, 0]]), np.array([[0.5, 0.3], [0.1, 0.3]]), np.array([0.2, 0.6]))
    a = NUM_SPECIAL
    prompts = [[a], [], [UNK_ID]]
    seqs, ended = [[a], [a], [a]], [True, True, True]
    out = compute(Generations(seqs, ended=ended, oracle=d, prompts=prompts, best_sequences=seqs))
    # given [a]: ln .1 + ln .6; given []: ln .5 + ln .6; the impossible prompt is left out
    assert out["oracle/nll"] == pytest.approx(-LN(0.1 * 0.6 * 0.5 * 0.6) / 4, rel=1e-12)
    assert out["oracle/impossible_prompt_rate"] == pytest.approx(1 / 3)
    # modes: from 1 the empty string (.6 > a: .06, b: .3 * .2); from 0 [a] (.5 * .6 = .3)
    assert d.mode(1) == ([], pytest.approx(LN(0.6))) and d.mode(0) == ([a], pytest.approx(LN(0.3)))
    assert out["oracle/mode_logprob"] == pytest.approx((LN(0.6) + LN(0.3)) / 2, rel=1e-12)
    assert out["search/mode_found"] == 0.5  # [a] after [a] is not the mode; after [] it is
    # entropy pooled over the prompts' states; expected lengths by hand: 35/12 and 25/12
    assert d.expected_length(0) == pytest.approx(35 / 12)
    assert d.expected_length(1) == pytest.approx(25 / 12)
    assert out["oracle/entropy"] == pytest.approx((d.entropy(0) + d.entropy(1)) / 5, rel=1e-12)
    # unconditional scoring would count every row from the start state
    assert mode_found_rate(d, seqs, ended) == 1.0
    with pytest.raises(UserError, match="best_prompts"):
        Generations(
            seqs, ended=ended, oracle=d, prompts=prompts, best_sequences=seqs[:1], best_ended=[True]
        )


# ---------------------------------------------------------------- ABC

GOOD_TUNE = "M:6/8\nL:1/8\nK:D\nA|dfa afd|e2f gfe|dfa afd|e3 d2:|\n"  # pickup, short last bar
WRONG_BARS = "M:4/4\nL:1/8\nK:D\nABcd efga|b2a2 g2|fedc BAGF|E8|\n"  # bar 2 lasts 3/4
INVALID = "M:4/4\nL:1/8\nK:G\n]]]][[[ ((( zzzz |||: ::\n"  # unclosed chord: music21 raises
NO_NOTES = "M:4/4\nL:1/8\nK:G\n"
NO_METER = "L:1/8\nK:D\nABcd efga|b2a2 g2|fedc BAGF|E8|\n"


def test_abc_parse_valid_and_invalid():
    assert parse_abc(GOOD_TUNE) is not None
    assert parse_abc(INVALID) is None
    assert parse_abc(NO_NOTES) is None


# two sections with a pickup: "A" before each, the bar before ":|" short by the pickup
SECTIONS = "M:2/4\nL:1/8\nK:G\nA|:dB AG|FA dA|GB AF|G3:|\n|:A|de fg|af ge|dB AF|G3:|\n"
# the same with one full bar (the second) short by an eighth: wrong
SECTIONS_WRONG = "M:2/4\nL:1/8\nK:G\nA|:dB AG|FA d|GB AF|G3:|\n|:A|de fg|af ge|dB AF|G3:|\n"


def test_abc_bar_check_correct_and_wrong():
    assert bars_ok(parse_abc(GOOD_TUNE)) is True
    assert bars_ok(parse_abc(WRONG_BARS)) is False
    assert bars_ok(parse_abc(NO_METER)) is None
    # bars next to a section boundary (":|", "|:") are not full bars and are not checked
    assert bars_ok(parse_abc(SECTIONS)) is True
    assert bars_ok(parse_abc(SECTIONS_WRONG)) is False


def test_abc_metrics_rates():
    # parsed: GOOD, WRONG, NO_METER (3 of 5); bars checkable: GOOD, WRONG -> 1/2 OK
    tunes = [GOOD_TUNE, INVALID, WRONG_BARS, NO_NOTES, NO_METER]
    assert abc_rates(tunes, subset=200) == (pytest.approx(3 / 5), 0.5)
    small = abc_rates([GOOD_TUNE, INVALID] * 5, subset=4, seed=1)
    assert small[0] in (0.0, 0.25, 0.5, 0.75, 1.0)
    # through the table: folk texts only
    out = compute(Generations([[5]] * 5, texts=tunes, dataset="folk", abc_subset=200))
    assert (out["abc/parse_rate"], out["abc/bar_ok_rate"]) == (pytest.approx(3 / 5), 0.5)
    assert "abc/parse_rate" not in compute(Generations([[5]] * 5, texts=tunes, dataset="text"))


# music21 spends minutes in `bestTimeSignature` on this generated tune (101 s on a loaded CPU)
SLOW_TUNE = "M:6/8\nL:1/8\nK:Gmin\nd/2-c/2 | (BAG) f (F BAA E3432|d>a|BBBF d)3dG"


@pytest.mark.slow  # waits out a music21 deadline: the full suite runs it
@pytest.mark.parametrize("where", ["main thread", "worker thread"])
def test_abc_rates_count_a_tune_past_its_deadline_as_unparsed(where, caplog):
    from concurrent.futures import ThreadPoolExecutor

    parse_abc(GOOD_TUNE)  # music21's import is not part of any tune's time
    before = threading.active_count()

    def run() -> tuple[float, float]:
        return abc_rates([GOOD_TUNE, SLOW_TUNE, WRONG_BARS], timeout_s=2.0)

    with caplog.at_level(logging.INFO, logger="seqgen"):
        if where == "main thread":
            out = run()
        else:
            with ThreadPoolExecutor(1) as pool:
                out = pool.submit(run).result()
    # the slow tune counts as unparsed; GOOD and WRONG are judged as without a deadline
    assert out == (pytest.approx(2 / 3), 0.5)
    assert "3 tunes in" in caplog.text and "1 ran past 2 s and count as unparsed" in caplog.text
    assert threading.active_count() == before  # every watchdog has ended


def test_call_with_deadline_stops_a_loop_that_catches_exception_and_nothing_arrives_later():
    def busy() -> int:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 60:
            try:
                sum(range(100))
            except Exception:  # as music21's handlers do: must not swallow the timeout
                pass
        return 1

    t0 = time.perf_counter()
    assert call_with_deadline(busy, 0.2) == (None, True)
    assert time.perf_counter() - t0 < 30  # stopped, not run to its 60 s
    assert call_with_deadline(lambda: 7, 0.05) == (7, False)
    time.sleep(0.3)  # past that call's deadline: no late TuneTimeout may arrive here
    assert call_with_deadline(lambda: 8, math.inf) == (8, False)


# ---------------------------------------------------------------- compute_metrics

# ---------------------------------------------------------------- compute

TOKEN_KEYS = {
    *(f"diversity/distinct_{n}" for n in range(1, 5)),
    "diversity/self_bleu4",
    "diversity/ent_4",
    "diversity/unique_seq",
    "zipf",
    "repetition/seq_rep_4",
    "repetition/rep_pct",
    "repetition/rep_16",
    "repetition/rep_32",
    "repetition/rep_128",
    "length/mean",
    "length/std",
}


def test_compute_keys_follow_inputs_and_layouts_agree():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(4, 12, size=k) for k in (5, 9, 7)]
    lps = [np.log(rng.uniform(0.1, 1, size=s.size)) for s in seqs]
    ended = np.array([True, False, True])
    eos = np.log([0.5, 0.3, 0.2])
    assert set(compute(seqs)) == TOKEN_KEYS
    out = compute(
        Generations(
            seqs,
            ended=ended,
            tempered_logprobs=lps,
            eos_tempered_logprobs=eos,
            model_logprobs=lps,
            eos_model_logprobs=eos,
            ref_logprobs=lps,
            ref_eos_logprobs=eos,
            oracle=FakeOracle(),
            best_sequences=[[5, 6]],
            best_ended=[True],
            texts=[GOOD_TUNE] * 3,
            dataset="folk",
        )
    )
    assert set(out) == TOKEN_KEYS | {
        "gen/ppl",
        "gen/ppl_model",
        "gen/ref_ppl",
        "length/eos_rate",
        "oracle/nll",
        "oracle/ppl",
        "oracle/entropy",
        "oracle/mode_logprob",
        "search/mode_found",
        "abc/parse_rate",
        "abc/bar_ok_rate",
        "abc/in_key_rate",
        "abc/in_key_notes",
    }
    # tokens 5 + 9 + 7 = 21 plus 2 EOS
    total = sum(lp.sum() for lp in lps) + eos[0] + eos[2]
    assert out["gen/ppl"] == pytest.approx(math.exp(-total / 23), rel=1e-12)
    padded = np.zeros((3, 9), np.int64)
    padded_lp = np.zeros((3, 9))
    for i, (s, lp) in enumerate(zip(seqs, lps)):
        padded[i, : s.size], padded_lp[i, : s.size] = s, lp
    out_padded = compute(
        Generations(
            padded,
            lengths=[5, 9, 7],
            ended=ended,
            tempered_logprobs=padded_lp,
            eos_tempered_logprobs=eos,
        )
    )
    for key in TOKEN_KEYS | {"gen/ppl", "length/eos_rate"}:
        assert out_padded[key] == pytest.approx(out[key], rel=1e-12, nan_ok=True), key


def test_best_ended_defaults_to_ended_and_max_len_is_checked():
    seqs = [[5, 6], [5, 6], [5]]
    gen = Generations(
        seqs, ended=[True, False, True], oracle=FakeOracle(), best_sequences=seqs, max_len=[2, 3, 1]
    )
    assert compute(gen)["search/mode_found"] == pytest.approx(1 / 3)  # only the first is the mode
    with pytest.raises(ValueError):
        Generations(seqs, max_len=1)


def test_decode_output_inputs_cuts_prompts_and_padding():
    # B = 2 prompts, N = 2 samples, T = 5; prompt lengths 1 and 0
    tokens = np.array(
        [[[9, 5, 6, 0, 0], [9, 7, 0, 0, 0]], [[5, 5, 5, 5, 5], [6, 0, 0, 0, 0]]], np.int32
    )
    out = SimpleNamespace(
        tokens=tokens,
        lengths=np.array([[3, 2], [5, 1]]),
        prompt_lengths=np.array([1, 0]),
        ended=np.array([[True, True], [False, True]]),
        logprobs=np.where(tokens > 0, -1.0, 0.0),
        tempered_logprobs=None,
        eos_logprob=np.full((2, 2), -2.0),
        eos_tempered_logprob=None,
    )
    kw = decode_output_inputs(out)
    assert [s.tolist() for s in kw["sequences"]] == [[5, 6], [7], [5, 5, 5, 5, 5], [6]]
    assert kw["ended"].tolist() == [True, True, False, True]
    assert [s.tolist() for s in kw["best_sequences"]] == [[5, 6], [5, 5, 5, 5, 5]]
    assert [p.tolist() for p in kw["prompts"]] == [[9], [9], [], []]
    assert [p.tolist() for p in kw["best_prompts"]] == [[9], []]
    assert "tempered_logprobs" not in kw and len(kw["model_logprobs"]) == 4
    metrics = compute(Generations(**kw))
    # 9 tokens at -1 plus 3 EOS at -2: ppl = exp(15 / 12)
    assert metrics["gen/ppl_model"] == pytest.approx(math.exp(15 / 12))
    assert kw["eos_model_logprobs"].tolist() == [-2.0] * 4 and "eos_tempered_logprobs" not in kw
    as_dict = decode_output_inputs(vars(out))  # a dict with the same keys works too
    assert [s.tolist() for s in as_dict["sequences"]] == [[5, 6], [7], [5, 5, 5, 5, 5], [6]]
    best = decode_output_inputs(out, best_only=True)
    assert [s.tolist() for s in best["sequences"]] == [[5, 6], [5, 5, 5, 5, 5]]


def test_the_compute_docstring_example_holds():
    import doctest

    from seqgen.metrics import table

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(table.compute, "compute", globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).attempted >= 4
    assert runner.summarize(verbose=False).failed == 0
