"""Repetition of generations: seq-rep-n and rep/l (Welleck et al. 2020), repetition %
(Holtzman et al. 2020).

Inputs are the generated continuations as token ids (list of 1-D arrays or padded `[N, T]`
with `lengths`), without prompt, BOS, EOS or PAD.
"""

from __future__ import annotations

import math

import numpy as np

from seqgen.metrics._packed import Packed, SequencesLike, ngram_ids, pack

REP_WINDOWS = (16, 32, 128)
HOLTZMAN_MAX_N = 90  # longest block `degen/metrics/repetition.py` looks for


def seq_rep_n(sequences: SequencesLike | Packed, n: int = 4, *, lengths=None) -> float:
    """seq-rep-n, Welleck et al. 2020 ("Neural Text Generation with Unlikelihood Training",
    ICLR), Sec. 6:

        seq-rep-n(x) = 1 - |unique n-grams of x| / |n-grams of x|

    per continuation x, averaged over continuations. A continuation shorter than n has no
    n-grams (the ratio is undefined) and is left out of the average; NaN if all are.
    """
    ratios = _seq_rep_ratios(pack(sequences, lengths), n)
    return float(np.mean(ratios)) if ratios.size else math.nan


def _seq_rep_ratios(packed: Packed, n: int) -> np.ndarray:
    """1 - unique / all n-grams of each continuation with at least n tokens."""
    ids, starts = ngram_ids(packed, n)[n - 1]
    total = np.maximum(packed.lengths - n + 1, 0)
    has = total > 0
    if not has.any():
        return np.zeros(0)
    num_grams = int(ids.max()) + 1
    seq_of_unique = np.unique(packed.seq_index[starts] * num_grams + ids) // num_grams
    unique = np.bincount(seq_of_unique, minlength=packed.num_sequences)
    return 1.0 - unique[has] / total[has]


def rep_l(
    sequences: SequencesLike | Packed, windows=REP_WINDOWS, *, lengths=None
) -> dict[int, float]:
    """rep/l, Welleck et al. 2020 (ICLR), Sec. 6, applied to generated continuations:

        rep/l = (1 / #tokens) * sum_x sum_t 1[x_t in {x_{t-l}, ..., x_{t-1}}]

    the share of all generated tokens (pooled over sequences) that already occurred among the
    previous l tokens of the same continuation (the first token never counts as repeated).
    Returns {l: rep/l}; NaN for every l when there are no tokens.
    """
    packed = pack(sequences, lengths)
    m = packed.flat.size
    if m == 0:
        return {w: math.nan for w in windows}
    return {w: r / m for w, r in _repeats_within(packed, windows).items()}


def _repeats_within(packed: Packed, windows) -> dict[int, int]:
    """How many tokens occurred among the previous l of their continuation, for each l."""
    m = packed.flat.size
    # sort by (sequence, token, position): consecutive equal (sequence, token) pairs give each
    # token's most recent previous occurrence
    order = np.lexsort((packed.position, packed.flat, packed.seq_index))
    s, f, p = packed.seq_index[order], packed.flat[order], packed.position[order]
    same = np.zeros(m, bool)
    same[1:] = (s[1:] == s[:-1]) & (f[1:] == f[:-1])
    gap = np.full(m, np.iinfo(np.int64).max)
    gap[1:] = np.where(same[1:], p[1:] - p[:-1], gap[1:])
    return {w: int((gap <= w).sum()) for w in windows}


def end_repeats(
    sequences: SequencesLike | Packed, *, max_n: int = HOLTZMAN_MAX_N, lengths=None
) -> np.ndarray:
    """int64 [N, max_n]: entry [i, n-1] = how many consecutive copies of its last n tokens
    sequence i ends with (>= 1), exactly the `last_n_repeats` of Holtzman et al.'s code.

    A copy count c for block size n means x[L-c*n:] is c repetitions of x[L-n:]. Computed as
    1 + floor(r / n) with r the length of the run of matches rev[i] == rev[i + n] from the
    end, vectorized over sequences.
    """
    packed = pack(sequences, lengths)
    n_seq, lens = packed.num_sequences, packed.lengths
    t = int(lens.max(initial=0))
    # reversed, left-aligned: rev[i, j] = x_i[L_i - 1 - j]
    rev = np.full((n_seq, t), -1, np.int64)
    rev[packed.seq_index, lens[packed.seq_index] - 1 - packed.position] = packed.flat
    out = np.ones((n_seq, max_n), np.int64)
    idx = np.arange(t)
    for n in range(1, min(max_n, t - 1) + 1):
        eq = (rev[:, :-n] == rev[:, n:]) & (idx[None, : t - n] + n < lens[:, None])
        run = np.where(eq.all(axis=1), t - n, np.argmin(eq, axis=1))
        out[:, n - 1] = 1 + run // n
    return out


def is_repetition(
    sequences: SequencesLike | Packed, *, max_n: int = HOLTZMAN_MAX_N, lengths=None
) -> np.ndarray:
    """bool [N]: the generation ends in a repeating loop, Holtzman et al. 2020 (ICLR, Sec. 4 /
    Table 1 "Repetition %"), exactly as `degen/metrics/repetition.py` decides it:

    for n = 1..90 count the copies c_n of the final n-token block at the end of the
    sequence; take n* = the smallest n with the largest c_n; the sequence is a repetition iff
    c_{n*} > 1 and (n* >= 3 or c_{n*} > 50). (So "a a a a" ends in 4 copies of a 1-token
    block and is NOT a repetition; "a b c a b c" is; 51 copies of one token are.)
    """
    counts = end_repeats(sequences, max_n=max_n, lengths=lengths)
    best = np.argmax(counts, axis=1)  # first maximum, like Python's max over range(max_n)
    c = counts[np.arange(counts.shape[0]), best]
    return (c > 1) & ((best + 1 >= 3) | (c > 50))


def repetition_percent(
    sequences: SequencesLike | Packed, *, max_n: int = HOLTZMAN_MAX_N, lengths=None
) -> float:
    """Repetition %, Holtzman et al. 2020: 100 * share of generations for which
    `is_repetition` holds (a percentage in [0, 100], as the paper's Table 1 reports it)."""
    rep = is_repetition(sequences, max_n=max_n, lengths=lengths)
    return 100.0 * float(rep.mean()) if rep.size else math.nan


class RepetitionCounts:
    """The `repetition/*` metrics over generations added chunk by chunk: every one of them is
    a sum over continuations, so a chunk's sums are all that is kept (the same numbers as
    one chunk, to float64 rounding of seq-rep-4's sum)."""

    def __init__(self, windows=REP_WINDOWS) -> None:
        self.windows = tuple(windows)
        self.seq_rep_sum, self.seq_rep_count = 0.0, 0
        self.repeats = dict.fromkeys(self.windows, 0)
        self.tokens = self.loops = self.sequences = 0

    def add(self, sequences: SequencesLike | Packed, lengths=None) -> None:
        packed = pack(sequences, lengths)
        ratios = _seq_rep_ratios(packed, 4)
        self.seq_rep_sum += float(np.sum(ratios))
        self.seq_rep_count += ratios.size
        for w, r in _repeats_within(packed, self.windows).items():
            self.repeats[w] += r
        self.tokens += packed.flat.size
        self.loops += int(is_repetition(packed).sum())
        self.sequences += packed.num_sequences

    def seq_rep(self) -> float:
        """`seq_rep_n` (n = 4) of every continuation added."""
        return self.seq_rep_sum / self.seq_rep_count if self.seq_rep_count else math.nan

    def rep_pct(self) -> float:
        """`repetition_percent` of every continuation added."""
        return 100.0 * (self.loops / self.sequences) if self.sequences else math.nan

    def rep_l(self) -> dict[int, float]:
        """`rep_l` of every continuation added, {l: rep/l}."""
        return {w: self.repeats[w] / self.tokens if self.tokens else math.nan for w in self.windows}
