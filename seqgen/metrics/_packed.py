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
