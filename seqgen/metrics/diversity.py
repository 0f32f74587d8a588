"""Diversity of a set of generations: distinct-n, Self-BLEU, n-gram entropy, unique sequences,
Zipf coefficient.

All functions take token ids (a list of 1-D int arrays, or a padded `[N, T]` array with
`lengths`) of the generated continuations only (no prompt, no BOS/EOS/PAD) and count with
exact integer n-gram ids (`_packed.ngram_ids`), vectorized in numpy.
"""

from __future__ import annotations

import math

import numpy as np

from seqgen.metrics._packed import Packed, SequencesLike, ngram_ids, pack

SELF_BLEU_SAMPLES = 1000  # Holtzman et al. 2020 score 1,000 sampled generations
ZIPF_TOP_TYPES = 5000  # Holtzman et al. 2020 fit the 5,000 most frequent types


def distinct_n(sequences: SequencesLike | Packed, n: int, *, lengths=None) -> float:
    """Distinct-n, Li et al. 2016 ("A Diversity-Promoting Objective Function for Neural
    Conversation Models", NAACL), corpus level with the paper's scaling:

        distinct-n = |{distinct n-grams over all generations}| / (total generated tokens).

    N-grams do not cross sequence boundaries. NaN when there are no tokens.
    """
    packed = pack(sequences, lengths)
    total = int(packed.lengths.sum())
    if total == 0:
        return math.nan
    ids, _ = ngram_ids(packed, n)[n - 1]
    num_distinct = int(ids.max()) + 1 if ids.size else 0  # ids are dense: 0..distinct-1
    return num_distinct / total


def ngram_entropy(sequences: SequencesLike | Packed, n: int = 4, *, lengths=None) -> float:
    """Ent-n, Zhang et al. 2018 ("Generating Informative and Diverse Conversational Responses
    via Adversarial Information Maximization", NeurIPS), natural log:

        Ent-n = -sum_w (F(w) / Z) * ln(F(w) / Z),  Z = sum_w F(w),

    where F(w) is the count of n-gram w pooled over all generations (boundaries not crossed).
    NaN when no sequence has n tokens.
    """
    packed = pack(sequences, lengths)
    ids, _ = ngram_ids(packed, n)[n - 1]
    if ids.size == 0:
        return math.nan
    p = np.bincount(ids).astype(np.float64)
    p = p[p > 0] / ids.size
    return float(-(p * np.log(p)).sum())


def unique_sequences(sequences: SequencesLike | Packed, *, lengths=None) -> float:
    """Fraction of distinct sequences: |{distinct generations}| / N (exact token equality)."""
    packed = pack(sequences, lengths)
    if packed.num_sequences == 0:
        return math.nan
    distinct = {packed.sequence(i).tobytes() for i in range(packed.num_sequences)}
    return len(distinct) / packed.num_sequences


def zipf_coefficient(
    sequences: SequencesLike | Packed, *, top: int = ZIPF_TOP_TYPES, lengths=None
) -> float:
    """Zipf coefficient s, Holtzman et al. 2020 (ICLR, Sec. 6 / Table 1, `degen` code):

    count every token type over all generations, sort counts descending, keep the `top`
    most frequent types (ranks r = 1..K), fit log(count) = a + b * log(r) by ordinary least
    squares (as `scipy.stats.linregress`) and return s = -b. For counts exactly c / r^s the
    result is s. NaN with fewer than 2 types.
    """
    packed = pack(sequences, lengths)
    counts = np.bincount(packed.flat) if packed.flat.size else np.zeros(0, np.int64)
    counts = np.sort(counts[counts > 0])[::-1][:top].astype(np.float64)
    if counts.size < 2:
        return math.nan
    x = np.log(np.arange(1, counts.size + 1, dtype=np.float64))
    y = np.log(counts)
    x_c = x - x.mean()
    slope = float((x_c * (y - y.mean())).sum() / (x_c * x_c).sum())
    return -slope


def self_bleu(
    sequences: SequencesLike | Packed,
    *,
    max_n: int = 4,
    num_samples: int = SELF_BLEU_SAMPLES,
    seed: int = 0,
    epsilon: float = 0.1,
    lengths=None,
    return_scores: bool = False,
) -> float | np.ndarray:
    """Self-BLEU-`max_n`, Zhu et al. 2018 (Texygen, SIGIR) as Holtzman et al. 2020 compute it.

    A seeded random subset of min(N, num_samples) hypotheses (without replacement,
    `np.random.default_rng(seed)`) is scored, each by sentence BLEU (Papineni et al. 2002)
    against ALL the other N - 1 generations as references, and the scores are averaged.
    BLEU here is exactly nltk's `sentence_bleu(refs, hyp, weights=(1/max_n,)*max_n,
    smoothing_function=SmoothingFunction(epsilon).method1)`:
    - p_n = sum_g min(c_hyp(g), max_ref c_ref(g)) / max(1, #n-grams in hyp) (clipped counts
      against the maximum count over the references);
    - method 1 smoothing: a p_n with zero matches becomes epsilon / denominator;
    - BLEU = 0 if there is no unigram match at all (nltk's early exit);
    - brevity penalty against the closest reference length (ties -> the shorter reference):
      BP = 1 if c > r, 0 if c = 0, else exp(1 - r / c);
    - BLEU = BP * exp(sum_n (1/max_n) ln p_n).
    Vectorized: counts per (sequence, n-gram id) by `np.unique`; the max over references
    excluding the hypothesis itself is the top count of the n-gram, or its second count
    when the hypothesis holds the top one. NaN with fewer than 2 sequences.
    With `return_scores=True` returns (hypothesis indices, per-hypothesis BLEU) instead.
    """
    packed = pack(sequences, lengths)
    n_seq = packed.num_sequences
    if n_seq < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    hyps = np.sort(rng.choice(n_seq, size=min(n_seq, num_samples), replace=False))
    is_hyp = np.zeros(n_seq, bool)
    is_hyp[hyps] = True
    hyp_len = packed.lengths[hyps]

    matches = np.zeros((hyps.size, max_n))
    for n, (ids, starts) in enumerate(ngram_ids(packed, max_n), start=1):
        numer = np.zeros(n_seq)
        if ids.size:
            num_grams = int(ids.max()) + 1
            key, cnt = np.unique(packed.seq_index[starts] * num_grams + ids, return_counts=True)
            seq, gram = key // num_grams, key % num_grams
            # top-1 (with its holder) and top-2 count of every n-gram over all sequences
            order = np.lexsort((-cnt, gram))
            g_o, c_o, s_o = gram[order], cnt[order], seq[order]
            first = np.ones(g_o.size, bool)
            first[1:] = g_o[1:] != g_o[:-1]
            second = np.zeros(g_o.size, bool)
            second[1:] = first[:-1] & ~first[1:]
            top1 = np.zeros(num_grams, np.int64)
            top2 = np.zeros(num_grams, np.int64)
            holder = np.full(num_grams, -1, np.int64)
            top1[g_o[first]], holder[g_o[first]] = c_o[first], s_o[first]
            top2[g_o[second]] = c_o[second]
            sel = is_hyp[seq]
            s_h, g_h, c_h = seq[sel], gram[sel], cnt[sel]
            ref_max = np.where(holder[g_h] == s_h, top2[g_h], top1[g_h])
            numer = np.bincount(s_h, weights=np.minimum(c_h, ref_max), minlength=n_seq)
        matches[:, n - 1] = numer[hyps]

    # closest reference length among the other sequences (ties -> shorter)
    sorted_len = np.sort(packed.lengths)
    lo = np.searchsorted(sorted_len, hyp_len, "left")
    hi = np.searchsorted(sorted_len, hyp_len, "right")
    same_len_others = hi - lo - 1
    below = np.where(lo > 0, sorted_len[np.maximum(lo - 1, 0)], -(10**12))
    above = np.where(hi < n_seq, sorted_len[np.minimum(hi, n_seq - 1)], 10**12)
    closest = np.where(hyp_len - below <= above - hyp_len, below, above)
    closest = np.where(same_len_others > 0, hyp_len, closest)
    scores = bleu_from_matches(matches, hyp_len, closest, epsilon)
    if return_scores:
        return hyps, scores
    return float(scores.mean())


def bleu_from_matches(
    matches: np.ndarray, hyp_len: np.ndarray, ref_len: np.ndarray, epsilon: float = 0.1
) -> np.ndarray:
    """Sentence BLEU from clipped n-gram matches (Papineni et al. 2002), as nltk's
    `sentence_bleu` with `SmoothingFunction(epsilon).method1` and uniform weights:
    matches [..., max_n] (clipped matches of n = 1..max_n), hyp_len [...], ref_len [...] the
    (closest) reference length. p_n = matches_n / max(1, hyp_len - n + 1), a zero match count
    replaced by epsilon; BLEU = BP * exp(mean_n ln p_n), BP = 1 if c > r, 0 if c = 0, else
    exp(1 - r / c); 0 when no unigram matches.
    """
    max_n = matches.shape[-1]
    hyp_len = np.asarray(hyp_len)
    n = np.arange(1, max_n + 1)
    denom = np.maximum(1, hyp_len[..., None] - n + 1).astype(np.float64)
    log_p = np.log(np.where(matches == 0, epsilon, matches) / denom)
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(
            hyp_len > ref_len, 1.0, np.where(hyp_len == 0, 0.0, np.exp(1 - ref_len / hyp_len))
        )
    scores = bp * np.exp(log_p.sum(axis=-1) / max_n)
    return np.where(matches[..., 0] == 0, 0.0, scores)
