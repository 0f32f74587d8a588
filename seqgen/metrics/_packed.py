"""Packed token sequences and exact n-gram ids: the shared plumbing of the count metrics.

Every count metric works on one flat int64 array of all generated tokens plus the offsets of
each sequence, so that n-gram counting is a handful of `np.unique` calls instead of Python
loops. N-grams never cross a sequence boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from seqgen.errors import UserError

SequencesLike = Sequence[Sequence[int]] | Sequence[np.ndarray] | np.ndarray


class Packed(NamedTuple):
    """All sequences concatenated: `flat[offsets[i]:offsets[i + 1]]` is sequence i."""

    flat: np.ndarray  # int64 [M], M = total number of tokens
    offsets: np.ndarray  # int64 [N + 1]
    lengths: np.ndarray  # int64 [N]
    seq_index: np.ndarray  # int64 [M], which sequence each token belongs to
    position: np.ndarray  # int64 [M], position of each token inside its sequence
    cache: dict  # n-gram ids computed so far (`ngram_ids`), shared by the metrics of one call

    @property
    def num_sequences(self) -> int:
        return int(self.lengths.shape[0])

    def sequence(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def padded(self, pad: int = -1) -> np.ndarray:
        """int64 [N, max(lengths)] with `pad` after each sequence's end."""
        out = np.full((self.num_sequences, int(self.lengths.max(initial=0))), pad, np.int64)
        out[self.seq_index, self.position] = self.flat
        return out


def pack(
    sequences: SequencesLike | Packed, lengths: Sequence[int] | np.ndarray | None = None
) -> Packed:
    """Packs a list of 1-D id arrays, or a padded `[N, T]` array with `lengths[N]`.

    A 2-D array without `lengths` is taken as N sequences of length T each; a `Packed` is
    returned as it is (with its n-gram cache), so metrics can be chained on one packing.
    """
    if isinstance(sequences, Packed):
        return sequences
    if (isinstance(sequences, np.ndarray) and sequences.ndim == 2) or lengths is not None:
        arr = np.asarray(sequences)
        if arr.ndim != 2:
            raise UserError(f"padded sequences must be 2-D [N, T], got shape {arr.shape}")
        n, t = arr.shape
        lens = np.full(n, t, np.int64) if lengths is None else np.asarray(lengths, np.int64)
        if lens.shape != (n,) or (lens < 0).any() or (lens > t).any():
            raise UserError(f"lengths must be {n} integers in [0, {t}], got {lens!r}")
        mask = np.arange(t)[None, :] < lens[:, None]
        flat = arr[mask].astype(np.int64)
    else:
        arrays = [np.asarray(s, np.int64).reshape(-1) for s in sequences]
        lens = np.array([a.shape[0] for a in arrays], np.int64)
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    seq_index = np.repeat(np.arange(lens.shape[0], dtype=np.int64), lens)
    position = np.arange(flat.shape[0], dtype=np.int64) - offsets[seq_index]
    return Packed(flat, offsets, lens, seq_index, position, {})


def ngram_ids(packed: Packed, max_n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact integer ids of every n-gram, n = 1..max_n.

    Returns `[(ids_n, starts_n) for n in 1..max_n]`: `starts_n` are the flat positions where an
    n-gram fits inside its sequence and `ids_n[j]` identifies the n-gram starting there (equal
    ids <=> equal n-grams; ids are dense in [0, number of distinct n-grams)). Built
    recursively, id(w_1..w_n) = rank of the pair (id(w_1..w_{n-1}), w_n), so there are no
    hash collisions and no int64 overflow for any vocabulary size. Cached on `packed`, so
    the metrics of one `compute_metrics` call count n-grams once.
    """
    cached = packed.cache.get("ngrams", [])
    if len(cached) >= max_n:
        return cached[:max_n]
    flat, m = packed.flat, packed.flat.shape[0]
    base = int(flat.max(initial=0)) + 1
    out = []
    prev_full = np.full(m, -1, np.int64)  # id of the (n-1)-gram starting at each position
    ids, starts = np.unique(flat, return_inverse=True)[1].astype(np.int64), np.arange(m)
    prev_full[starts] = ids
    out.append((ids, starts))
    for n in range(2, max_n + 1):
        starts = np.nonzero(packed.position <= packed.lengths[packed.seq_index] - n)[0]
        key = prev_full[starts] * base + flat[starts + n - 1]
        ids = np.unique(key, return_inverse=True)[1].astype(np.int64).reshape(-1)
        prev_full = np.full(m, -1, np.int64)
        prev_full[starts] = ids
        out.append((ids, starts))
    packed.cache["ngrams"] = out
    return out


def ngram_keys(packed: Packed, n: int, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact keys of the n-grams of `packed` that are the same in every chunk of a larger set:
    `(keys, starts)`, `keys[j]` the n-gram starting at flat position `starts[j]`.

    A key is the n-gram read as a base-`base` number (`base` above every token id): int64 when
    base^n fits, else the n ids as big-endian bytes; either way keys sort as the n-grams do
    lexicographically, the order `ngram_ids` numbers them in.
    """
    starts = np.nonzero(packed.position <= packed.lengths[packed.seq_index] - n)[0]
    columns = [packed.flat[starts + j] for j in range(n)]
    if base**n < 2**63:
        keys = np.zeros(starts.size, np.int64)
        for col in columns:
            keys = keys * base + col
        return keys, starts
    rows = np.stack(columns, axis=1).astype(">i8") if columns else np.zeros((0, n), ">i8")
    return np.ascontiguousarray(rows).view(np.dtype((np.void, 8 * n))).reshape(-1), starts


class NgramCounts:
    """Counts of each distinct n-gram over sequences added chunk by chunk.

    Per distinct n-gram (sorted `keys`): `total` occurrences (kept only with `totals=True`:
    n-gram entropy reads them, distinct-n and Self-BLEU do not), and the largest count in one
    sequence (`top1`, held by sequence `holder`) and the largest in any other sequence
    (`top2`): Self-BLEU's clipped match against all references but the hypothesis is `top2`
    for the holder and `top1` for everyone else. Memory grows with the number of distinct
    n-grams, not with the number of sequences: `BYTES_PER_GRAM` (+8 with totals) each, the
    key's bytes included (8 while base^n < 2^63, else 8n), merged into the sorted table in
    place, so a chunk never copies the table more than once.
    """

    BYTES_PER_GRAM = 8 + 3 * 4  # int64 key; int32 top1, top2, holder

    def __init__(self, totals: bool = True) -> None:
        self.keys: np.ndarray | None = None
        self.totals = totals
        self.total = np.zeros(0, np.int64)
        self.top1 = self.holder = self.top2 = np.zeros(0, np.int32)

    def add(self, keys: np.ndarray, seq: np.ndarray) -> None:
        """Add the n-grams `keys` (from `ngram_keys`) of the sequences numbered `seq` (global
        indices, new ones: a sequence is added once, whole)."""
        grams, inv = np.unique(keys, return_inverse=True)
        g = max(grams.size, 1)
        seq0 = int(seq.min(initial=0))
        pair, cnt = np.unique((seq - seq0) * g + inv.reshape(-1), return_counts=True)
        s, gram = pair // g + seq0, pair % g
        total = np.bincount(gram, weights=cnt, minlength=grams.size).astype(np.int64)
        # the top count of each n-gram (with its holder) and the second, within the chunk
        order = np.lexsort((-cnt, gram))
        g_o, c_o, s_o = gram[order], cnt[order], s[order]
        first = np.ones(g_o.size, bool)
        first[1:] = g_o[1:] != g_o[:-1]
        second = np.zeros(g_o.size, bool)
        second[1:] = first[:-1] & ~first[1:]
        c1, h1, c2 = (np.zeros(grams.size, np.int32) for _ in range(3))
        c1[g_o[first]], h1[g_o[first]] = c_o[first], s_o[first]
        c2[g_o[second]] = c_o[second]
        if self.keys is None:
            self.keys, self.top1, self.holder, self.top2 = grams, c1, h1, c2
            self.total = total if self.totals else self.total
            return
        self._merge(grams, total, c1, h1, c2)

    def _merge(self, grams, total, c1, h1, c2) -> None:
        """Merge a chunk's sorted table into the kept one: n-grams seen before are updated in
        place, new ones inserted at their sorted positions (one copy of each array)."""
        at = np.searchsorted(self.keys, grams)
        seen = at < self.keys.size
        seen[seen] = self.keys[at[seen]] == grams[seen]
        old, mine = at[seen], np.flatnonzero(seen)
        a1, b1 = self.top1[old], c1[mine]
        keep = a1 >= b1  # ties keep the earlier holder, as one lexsort over all would
        self.top2[old] = np.where(keep, np.maximum(self.top2[old], b1), np.maximum(c2[mine], a1))
        self.holder[old] = np.where(keep, self.holder[old], h1[mine])
        self.top1[old] = np.maximum(a1, b1)
        if self.totals:
            self.total[old] += total[mine]
        new = np.flatnonzero(~seen)
        where = at[new]
        self.keys = np.insert(self.keys, where, grams[new])
        self.top1 = np.insert(self.top1, where, c1[new])
        self.holder = np.insert(self.holder, where, h1[new])
        self.top2 = np.insert(self.top2, where, c2[new])
        if self.totals:
            self.total = np.insert(self.total, where, total[new])

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Positions of `keys` (each one of the table's) in `self.keys`."""
        return np.searchsorted(self.keys, keys)
