"""Diversity of a set of generations: distinct-n, Self-BLEU, n-gram entropy, unique sequences,
Zipf coefficient.

All functions take token ids (a list of 1-D int arrays, or a padded `[N, T]` array with
`lengths`) of the generated continuations only (no prompt, no BOS/EOS/PAD) and count with
exact integer n-gram ids (`_packed.ngram_ids`), vectorized in numpy.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from seqgen.errors import UserError
from seqgen.metrics._packed import NgramCounts, Packed, SequencesLike, ngram_keys, pack

_DIGEST = np.dtype("V16")  # a sequence's 128-bit BLAKE2b digest
SELF_BLEU_SAMPLES = 1000  # Holtzman et al. 2020 score 1,000 sampled generations
ZIPF_TOP_TYPES = 5000  # Holtzman et al. 2020 fit the 5,000 most frequent types


def _counts(sequences: SequencesLike | Packed, lengths, max_n: int, **kwargs) -> DiversityCounts:
    """The counts of one set of generations: every function below is one chunk of them."""
    packed = pack(sequences, lengths)
    counts = DiversityCounts(packed.num_sequences, max_n=max_n, **kwargs)
    counts.add(packed)
    return counts


def distinct_n(sequences: SequencesLike | Packed, n: int, *, lengths=None) -> float:
    """Distinct-n, Li et al. 2016 ("A Diversity-Promoting Objective Function for Neural
    Conversation Models", NAACL), corpus level with the paper's scaling:

        distinct-n = |{distinct n-grams over all generations}| / (total generated tokens).

    N-grams do not cross sequence boundaries. NaN when there are no tokens.
    """
    return _counts(sequences, lengths, n, self_bleu_samples=0).distinct(n)


def ngram_entropy(sequences: SequencesLike | Packed, n: int = 4, *, lengths=None) -> float:
    """Ent-n, Zhang et al. 2018 ("Generating Informative and Diverse Conversational Responses
    via Adversarial Information Maximization", NeurIPS), natural log:

        Ent-n = -sum_w (F(w) / Z) * ln(F(w) / Z),  Z = sum_w F(w),

    where F(w) is the count of n-gram w pooled over all generations (boundaries not crossed).
    NaN when no sequence has n tokens.
    """
    return _counts(sequences, lengths, n, self_bleu_samples=0).entropy(n)


def unique_sequences(sequences: SequencesLike | Packed, *, lengths=None) -> float:
    """Fraction of distinct sequences: |{distinct generations}| / N (exact token equality;
    sequences are compared by a 128-bit BLAKE2b digest of their ids, so that a large study
    holds 16 bytes per distinct sequence: a collision has probability ~N^2 / 2^129)."""
    return _counts(sequences, lengths, 1, self_bleu_samples=0).unique()


def zipf_coefficient(
    sequences: SequencesLike | Packed, *, top: int = ZIPF_TOP_TYPES, lengths=None
) -> float:
    """Zipf coefficient s, Holtzman et al. 2020 (ICLR, Sec. 6 / Table 1, `degen` code):

    count every token type over all generations, sort counts descending, keep the `top`
    most frequent types (ranks r = 1..K), fit log(count) = a + b * log(r) by ordinary least
    squares (as `scipy.stats.linregress`) and return s = -b. For counts exactly c / r^s the
    result is s. NaN with fewer than 2 types.
    """
    return _counts(sequences, lengths, 1, self_bleu_samples=0, zipf_top=top).zipf()


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
    Vectorized and streamable (`DiversityCounts`): the max over references excluding the
    hypothesis itself is the top count of the n-gram over all sequences, or its second count
    when the hypothesis holds the top one (`NgramCounts`); the closest reference length comes
    from the histogram of lengths. NaN with fewer than 2 sequences.
    With `return_scores=True` returns (hypothesis indices, per-hypothesis BLEU) instead.
    """
    counts = _counts(
        sequences, lengths, max_n, self_bleu_samples=num_samples, seed=seed, epsilon=epsilon
    )
    hyps, scores = counts.self_bleu_scores()
    if return_scores:
        return hyps, scores
    return float(scores.mean()) if scores.size else math.nan


class DiversityCounts:
    """Everything the diversity metrics count, over generations added chunk by chunk.

    Holds, for n = 1..max_n, the distinct n-grams with their counts (`NgramCounts`; the
    total count of each only for n = max_n, the entropy's, when generations come in several
    chunks), token counts, the histogram of lengths, a 16-byte digest per distinct sequence
    and the Self-BLEU hypotheses (a seeded subset of the `num_sequences` generations, known in
    advance), so that memory grows with the distinct n-grams and sequences, not with the
    number of generations: exact distinct-n, Ent-n and Self-BLEU against all N - 1 others need
    every distinct n-gram, which is what `bytes_held` counts. Adding all generations as one
    chunk or as many gives the same metrics (to float64 rounding). `vocab_size` (above every
    id) must be given when generations come in several chunks.
    """

    def __init__(
        self,
        num_sequences: int,
        *,
        max_n: int = 4,
        seed: int = 0,
        self_bleu_samples: int = SELF_BLEU_SAMPLES,
        zipf_top: int = ZIPF_TOP_TYPES,
        epsilon: float = 0.1,
        vocab_size: int | None = None,
    ) -> None:
        self.num_sequences, self.max_n, self.vocab_size = num_sequences, max_n, vocab_size
        self.zipf_top, self.epsilon = zipf_top, epsilon
        if num_sequences >= 2**31:  # NgramCounts.holder is int32
            raise UserError(f"{num_sequences} generations; allowed: fewer than 2^31")
        self.grams = [NgramCounts() for _ in range(max_n)]
        self.tokens = np.zeros(0, np.int64)  # count per token id
        self.length_hist = np.zeros(0, np.int64)
        self.digests = np.zeros(0, _DIGEST)  # sorted, distinct
        self.seen = 0
        rng = np.random.default_rng(seed)
        size = min(num_sequences, self_bleu_samples) if num_sequences >= 2 else 0
        self.hyps = np.sort(rng.choice(num_sequences, size=size, replace=False))
        self.hyp_tokens: dict[int, np.ndarray] = {}

    def add(self, sequences: SequencesLike | Packed, lengths=None) -> None:
        """Count the next generations (in order: the k-th added is generation `seen + k`)."""
        packed = pack(sequences, lengths)
        first, n_seq = self.seen, packed.num_sequences
        if first + n_seq > self.num_sequences:
            raise ValueError(f"more than the {self.num_sequences} generations announced")
        base = self.vocab_size or int(packed.flat.max(initial=0)) + 1
        if self.vocab_size is None and first + n_seq < self.num_sequences:
            raise ValueError("DiversityCounts needs vocab_size to count in several chunks")
        whole = first == 0 and n_seq == self.num_sequences  # one chunk: share its tables
        for n in range(1, self.max_n + 1):
            cached = packed.cache.get(("ngram_counts", n, base)) if whole else None
            if cached is None:
                if self.seen == 0:  # streamed, only the entropy's n needs totals
                    self.grams[n - 1] = NgramCounts(totals=whole or n == self.max_n)
                keys, starts = ngram_keys(packed, n, base)
                self.grams[n - 1].add(keys, packed.seq_index[starts] + first)
                if whole:
                    packed.cache[("ngram_counts", n, base)] = self.grams[n - 1]
            else:  # counted by another metric of the same set (the table's, one by one)
                self.grams[n - 1] = cached
        self.tokens = _add_counts(self.tokens, np.bincount(packed.flat))
        self.length_hist = _add_counts(self.length_hist, np.bincount(packed.lengths))
        digests = [
            hashlib.blake2b(packed.sequence(i).tobytes(), digest_size=16).digest()
            for i in range(n_seq)
        ]
        self.digests = np.union1d(self.digests, np.array(digests, _DIGEST))
        mine = self.hyps[(self.hyps >= first) & (self.hyps < first + n_seq)]
        for h in map(int, mine):
            self.hyp_tokens[h] = packed.sequence(h - first).copy()
        self.seen += n_seq

    def distinct(self, n: int) -> float:
        total = int(self.tokens.sum())
        return self.grams[n - 1].keys.size / total if total else math.nan

    def entropy(self, n: int) -> float:
        counts = self.grams[n - 1].total
        if counts.sum() == 0:
            return math.nan
        p = counts.astype(np.float64)
        p = p[p > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())

    def unique(self) -> float:
        return self.digests.size / self.seen if self.seen else math.nan

    def bytes_held(self) -> int:
        """Bytes of the kept counts (n-gram tables, digests): what grows with a study."""
        arrays = [a for t in self.grams for a in (t.keys, t.total, t.top1, t.holder, t.top2)]
        return sum(a.nbytes for a in arrays if a is not None) + self.digests.nbytes

    def zipf(self) -> float:
        counts = np.sort(self.tokens[self.tokens > 0])[::-1][: self.zipf_top].astype(np.float64)
        if counts.size < 2:
            return math.nan
        x = np.log(np.arange(1, counts.size + 1, dtype=np.float64))
        y = np.log(counts)
        x_c = x - x.mean()
        slope = float((x_c * (y - y.mean())).sum() / (x_c * x_c).sum())
        return -slope

    def self_bleu_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(hypothesis indices, their sentence BLEU against all other generations)."""
        if self.seen < 2 or not self.hyps.size:
            return self.hyps, np.zeros(0)
        hyp = pack([self.hyp_tokens[int(h)] for h in self.hyps])
        base = self.vocab_size or int(self.tokens.size)
        matches = np.zeros((self.hyps.size, self.max_n))
        for n, table in enumerate(self.grams, start=1):
            keys, starts = ngram_keys(hyp, n, base)
            if not keys.size:
                continue
            grams, inv = np.unique(keys, return_inverse=True)
            local = hyp.seq_index[starts]
            pair, cnt = np.unique(local * grams.size + inv.reshape(-1), return_counts=True)
            h, at = pair // grams.size, table.lookup(grams[pair % grams.size])
            ref_max = np.where(table.holder[at] == self.hyps[h], table.top2[at], table.top1[at])
            matches[:, n - 1] = np.bincount(
                h, weights=np.minimum(cnt, ref_max), minlength=self.hyps.size
            )
        # closest length among the other generations (ties -> shorter)
        hyp_len = hyp.lengths
        present = np.flatnonzero(self.length_hist)
        lo = np.searchsorted(present, hyp_len, "left")
        hi = np.searchsorted(present, hyp_len, "right")
        below = np.where(lo > 0, present[np.maximum(lo - 1, 0)], -(10**12))
        above = np.where(hi < present.size, present[np.minimum(hi, present.size - 1)], 10**12)
        closest = np.where(hyp_len - below <= above - hyp_len, below, above)
        closest = np.where(self.length_hist[hyp_len] > 1, hyp_len, closest)
        return self.hyps, bleu_from_matches(matches, hyp_len, closest, self.epsilon)

    def self_bleu(self) -> float:
        """Self-BLEU: the mean of `self_bleu_scores` (NaN with fewer than 2 generations)."""
        _, scores = self.self_bleu_scores()
        return float(scores.mean()) if scores.size else math.nan


def _add_counts(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    size = max(total.size, more.size)
    return np.pad(total, (0, size - total.size)) + np.pad(more, (0, size - more.size))


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
