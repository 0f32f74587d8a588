"""Pairwise utilities u(h, r) between hypotheses and (pseudo-)references, on token ids, for
minimum Bayes risk decoding (`seqgen.decoding.mbr`) and the MBR reproduction.

Each function takes H hypotheses and R references (lists of 1-D int arrays, generated tokens
only) and returns float64 [H, R], vectorized in numpy: n-gram counts through the exact n-gram
ids of `_packed.ngram_ids` and clipped matches sum_g min(c_h(g), c_r(g)) for all pairs at once;
edit distance by one numpy row update per hypothesis position for all pairs at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqgen.metrics._packed import ngram_ids, pack
from seqgen.metrics.diversity import bleu_from_matches

CHUNK = 1 << 24  # elements per [h, R, G] block of the pairwise minimum


def ngram_matches(
    hyps: Sequence, refs: Sequence, max_n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clipped n-gram matches of every pair, n = 1..max_n.

    Returns matches [H, R, max_n] = sum_g min(c_h(g), c_r(g)) over the n-grams g (n-grams do not
    cross sequence ends), and the n-gram totals of the hypotheses [H, max_n] and references
    [R, max_n] (max(0, length - n + 1)).
    """
    packed = pack(list(hyps) + list(refs))
    h, r = len(hyps), len(refs)
    lens = packed.lengths
    n_arr = np.arange(1, max_n + 1)
    totals = np.maximum(0, lens[:, None] - n_arr + 1).astype(np.float64)  # [H + R, max_n]
    matches = np.zeros((h, r, max_n))
    for n, (ids, starts) in enumerate(ngram_ids(packed, max_n), start=1):
        if ids.size == 0:
            continue
        g = int(ids.max()) + 1
        counts = np.zeros((h + r, g), np.int32)
        np.add.at(counts, (packed.seq_index[starts], ids), 1)
        ch, cr = counts[:h], counts[h:]
        step = max(1, CHUNK // max(1, r * g))
        for i in range(0, h, step):
            block = np.minimum(ch[i : i + step, None, :], cr[None, :, :])  # [h, R, G]
            matches[i : i + step, :, n - 1] = block.sum(axis=-1)
    return matches, totals[:h], totals[h:]


def chrf(hyps: Sequence, refs: Sequence, *, max_n: int = 6, beta: float = 2.0) -> np.ndarray:
    """chrF (Popović 2015, "chrF: character n-gram F-score for automatic MT evaluation") over
    token n-grams, as sacrebleu's `CHRF(char_order=max_n, word_order=0, beta=2)` computes it
    on character tokens (its default `eps_smoothing=False`):
    P_n = matches_n / hyp n-grams, R_n = matches_n / ref n-grams, averaged over the orders n
    where both sequences have n-grams (sacrebleu's effective order); chrP, chrR those means;
    chrF_beta = (1 + beta^2) chrP chrR / (beta^2 chrP + chrR), 0 when chrP + chrR = 0.
    On [0, 1] (sacrebleu reports 100x). Two empty sequences score 1 (they are equal), an
    empty against a non-empty one 0. [H, R]
    """
    m, th, tr = ngram_matches(hyps, refs, max_n)
    both = (th[:, None, :] > 0) & (tr[None, :, :] > 0)  # [H, R, n]
    eff = both.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(both, m / th[:, None, :], 0.0).sum(-1) / np.maximum(eff, 1)
        rec = np.where(both, m / tr[None, :, :], 0.0).sum(-1) / np.maximum(eff, 1)
        f = (1 + beta**2) * prec * rec / (beta**2 * prec + rec)
    f = np.where(prec + rec > 0, f, 0.0)
    both_empty = (th[:, None, 0] == 0) & (tr[None, :, 0] == 0)
    return np.where(both_empty, 1.0, f)


def sentence_bleu(
    hyps: Sequence, refs: Sequence, *, max_n: int = 4, epsilon: float = 0.1
) -> np.ndarray:
    """Sentence BLEU-`max_n` of each hypothesis against one reference (Papineni et al. 2002),
    smoothed as Self-BLEU is (nltk `sentence_bleu` with method 1, `diversity.bleu_from_matches`):
    clipped counts min(c_h, c_r), p_n = matches_n / max(1, |h| - n + 1) with zero matches
    replaced by epsilon, geometric mean, brevity penalty exp(1 - |r| / |h|) when |h| <= |r|.
    [H, R]
    """
    m, _, _ = ngram_matches(hyps, refs, max_n)
    hl = np.array([len(x) for x in hyps], np.float64)[:, None]
    rl = np.array([len(x) for x in refs], np.float64)[None, :]
    return bleu_from_matches(m, np.broadcast_to(hl, m.shape[:2]), rl, epsilon)


def edit_similarity(hyps: Sequence, refs: Sequence) -> np.ndarray:
    """1 - d(h, r) / max(|h|, |r|), d the Levenshtein distance (unit insert, delete,
    substitute; Levenshtein 1966); 1 for two empty sequences. [H, R]

    Row update for all pairs at once: with E_j = min(D[i-1, j] + 1, D[i-1, j-1] + [h_i != r_j])
    (E_0 = i), the row is D[i, j] = min_{k <= j} (E_k + j - k) = j + cummin_k (E_k - k).
    """
    h, r = len(hyps), len(refs)
    hl = np.array([len(x) for x in hyps], np.int64)
    rl = np.array([len(x) for x in refs], np.int64)
    lh, lr = int(hl.max(initial=0)), int(rl.max(initial=0))
    hp = np.full((h, lh), -1, np.int64)
    rp = np.full((r, lr), -2, np.int64)
    for i, x in enumerate(hyps):
        hp[i, : len(x)] = x
    for j, x in enumerate(refs):
        rp[j, : len(x)] = x
    cols = np.arange(lr + 1)
    d = np.broadcast_to(cols, (h, r, lr + 1)).copy()  # D[0, j] = j
    dist = np.where(hl[:, None] == 0, rl[None, :], 0)  # [H, R] rows of empty hypotheses
    for i in range(1, lh + 1):
        sub = (hp[:, None, i - 1, None] != rp[None, :, :]).astype(np.int64)  # [H, R, lr]
        e = np.empty_like(d)
        e[..., 0] = i
        e[..., 1:] = np.minimum(d[..., 1:] + 1, d[..., :-1] + sub)
        d = cols + np.minimum.accumulate(e - cols, axis=-1)
        at_end = hl == i  # hypotheses whose last token is i
        dist = np.where(at_end[:, None], np.take_along_axis(d, rl[None, :, None], -1)[..., 0], dist)
    denom = np.maximum(hl[:, None], rl[None, :])
    return np.where(denom == 0, 1.0, 1.0 - dist / np.maximum(denom, 1))


UTILITY_FUNCTIONS = {"chrf": chrf, "bleu": sentence_bleu, "edit": edit_similarity}


def mbr_summary(expected_utility: np.ndarray) -> tuple[float, float]:
    """MBR's report from the candidates' expected utilities [B, N] (sorted best first, as
    `decoder=mbr` returns them): `mbr/expected_utility` = mean over prompts of the chosen
    candidate's (1/M) sum_j u(h, r_j); `mbr/utility_spread` = mean over prompts of the
    population std of the N candidates' expected utilities (how much the choice matters)."""
    eu = np.asarray(expected_utility, np.float64)
    return float(eu[:, 0].mean()), float(eu.std(axis=1).mean())
