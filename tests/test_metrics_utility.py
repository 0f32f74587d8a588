"""MBR utilities on token ids: hand-computed chrF, BLEU equal to nltk and to Self-BLEU's,
edit similarity equal to a plain dynamic program."""

from __future__ import annotations

import numpy as np
import pytest

from seqgen.metrics import self_bleu
from seqgen.metrics.utility import chrf, edit_similarity, sentence_bleu


def test_chrf_hand_computed():
    # n=1: P = R = 2/3; n=2: P = R = 1/2; n=3: 0; n>=4: no n-grams (not counted)
    assert chrf([[5, 6, 7]], [[5, 6, 8]])[0, 0] == pytest.approx(7 / 18)
    # n=1 only: P = 1/2 (clipped: one 5 matches), R = 1; F2 = 5 * 0.5 / (4 * 0.5 + 1)
    assert chrf([[5, 5]], [[5]])[0, 0] == pytest.approx(2.5 / 3)
    assert chrf([[5, 5]], [[5]], beta=1.0)[0, 0] == pytest.approx(2 / 3)
    u = chrf([[4, 5, 6, 7, 8, 9, 10], [], [3]], [[4, 5, 6, 7, 8, 9, 10], [], [4]])
    # [4..10] vs [4]: one unigram match, P = 1/7, R = 1, F2 = 5/11
    np.testing.assert_allclose(u, [[1, 0, 5 / 11], [0, 1, 0], [0, 0, 0]])


def test_chrf_equals_sacrebleu_on_characters():
    sacrebleu = pytest.importorskip("sacrebleu")
    rng = np.random.default_rng(0)
    words = ["abcab", "abca", "bbcaa", "cabcabc", "a", "ccab"]
    scorer = sacrebleu.metrics.CHRF()
    for _ in range(10):
        h, r = rng.choice(words, 2)
        ours = chrf([[ord(c) for c in h]], [[ord(c) for c in r]])[0, 0]
        assert ours * 100 == pytest.approx(scorer.sentence_score(h, [r]).score, abs=1e-9)


def test_sentence_bleu_equals_nltk_and_self_bleu():
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_bleu

    rng = np.random.default_rng(1)
    hyps = [rng.integers(4, 8, size=rng.integers(0, 9)).tolist() for _ in range(6)]
    refs = [rng.integers(4, 8, size=rng.integers(1, 9)).tolist() for _ in range(5)]
    u = sentence_bleu(hyps, refs)
    smooth = SmoothingFunction(0.1).method1
    for i, h in enumerate(hyps):
        for j, r in enumerate(refs):
            want = nltk_bleu([r], h, smoothing_function=smooth) if h else 0.0
            assert u[i, j] == pytest.approx(want, abs=1e-12)
            if h:  # Self-BLEU of the pair (h, r) scores h against r alone
                _, sb = self_bleu([h, r], return_scores=True)
                assert u[i, j] == pytest.approx(sb[0], abs=1e-12)


def levenshtein(a: list, b: list) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def test_edit_similarity_equals_dynamic_program():
    assert edit_similarity([[5, 6, 7]], [[5, 7]])[0, 0] == pytest.approx(2 / 3)
    np.testing.assert_allclose(edit_similarity([[], [4, 4]], [[], [4, 4]]), [[1, 0], [0, 1]])
    rng = np.random.default_rng(2)
    hyps = [rng.integers(4, 7, size=rng.integers(0, 10)).tolist() for _ in range(7)]
    refs = [rng.integers(4, 7, size=rng.integers(0, 10)).tolist() for _ in range(6)]
    u = edit_similarity(hyps, refs)
    for i, h in enumerate(hyps):
        for j, r in enumerate(refs):
            m = max(len(h), len(r))
            want = 1.0 if m == 0 else 1 - levenshtein(h, r) / m
            assert u[i, j] == pytest.approx(want, abs=1e-12)
