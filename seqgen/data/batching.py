"""Fixed-shape training and evaluation batches with padding masks.

Sequence corpora (folk tunes, DPFSA strings): a sequence s (ids without BOS/EOS) becomes
inputs ``[BOS] + s`` and targets ``s + [EOS]`` (n + 1 positions). When n + 1 > max_len both
streams are cut at the same positions into consecutive chunks of max_len, so every target
(EOS included) lands in exactly one chunk; a later chunk therefore starts with the token
that precedes its first target instead of BOS (the recurrent state is not carried over
between chunks).

Stream corpora (text, `stream=True`): each split is a list of contiguous token streams and no
EOS is appended. Windows of max_len targets tile each stream, s[i : i + T] for i = 0, T, 2T,
..., so every stream token is a target exactly once; a window's inputs are BOS followed by
its targets shifted by one, BOS marking the fresh (zero) carry each window starts from, as a
decoder starts from BOS before a prompt. Pads are PAD_ID with mask 0.
Every batch is [batch_size, max_len], so a jitted step compiles once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID


class Batch(NamedTuple):
    inputs: np.ndarray  # int32 [B, T]
    targets: np.ndarray  # int32 [B, T]
    mask: np.ndarray  # float32 [B, T], 1 on real targets


def make_examples(seqs: Sequence[np.ndarray], max_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) chunks of at most max_len positions, in order."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = []
    for s in seqs:
        s = np.asarray(s, dtype=np.int32)
        inputs = np.concatenate([[BOS_ID], s]).astype(np.int32)
        targets = np.concatenate([s, [EOS_ID]]).astype(np.int32)
        for start in range(0, len(targets), max_len):
            out.append((inputs[start : start + max_len], targets[start : start + max_len]))
    return out


def make_stream_examples(
    streams: Sequence[np.ndarray], max_len: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) windows tiling each stream: targets s[i:i+T], inputs BOS + s[i:i+T-1]."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = []
    for s in streams:
        s = np.asarray(s, dtype=np.int32)
        for start in range(0, len(s), max_len):
            targets = s[start : start + max_len]
            out.append((np.concatenate([[BOS_ID], targets[:-1]]).astype(np.int32), targets))
    return out


def _examples(seqs: Sequence[np.ndarray], max_len: int, stream: bool):
    return make_stream_examples(seqs, max_len) if stream else make_examples(seqs, max_len)


def _stack(
    examples: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int, max_len: int
) -> Batch:
    inputs = np.full((batch_size, max_len), PAD_ID, np.int32)
    targets = np.full((batch_size, max_len), PAD_ID, np.int32)
    mask = np.zeros((batch_size, max_len), np.float32)
    for row, (x, y) in enumerate(examples):
        inputs[row, : len(x)] = x
        targets[row, : len(y)] = y
        mask[row, : len(y)] = 1.0
    return Batch(inputs, targets, mask)


def batch_iterator(
    seqs: Sequence[np.ndarray], batch_size: int, max_len: int, seed: int, *, stream: bool = False
) -> Iterator[Batch]:
    """Infinite shuffled batches [batch_size, max_len]: each epoch is a fresh permutation of
    the chunks (seeded), and batches run across epoch boundaries so every batch is full."""
    examples = _examples(seqs, max_len, stream)
    if not examples:
        raise ValueError("batch_iterator needs at least one sequence")
    rng = np.random.default_rng(seed)
    order = np.empty(0, dtype=np.int64)
    while True:
        while len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(examples))])
        take, order = order[:batch_size], order[batch_size:]
        yield _stack([examples[i] for i in take], batch_size, max_len)


def eval_batches(
    seqs: Sequence[np.ndarray], batch_size: int, max_len: int, *, stream: bool = False
) -> list[Batch]:
    """Deterministic batches covering every target token exactly once; the last batch is
    padded with fully masked rows."""
    examples = _examples(seqs, max_len, stream)
    return [
        _stack(examples[i : i + batch_size], batch_size, max_len)
        for i in range(0, len(examples), batch_size)
    ]


def num_target_tokens(seqs: Sequence[np.ndarray], *, stream: bool = False) -> int:
    """Number of predicted tokens, the denominator of per-token perplexity: sequences count
    their EOS, streams only their own tokens (EOS only where the stream has it)."""
    return int(sum(len(s) + (0 if stream else 1) for s in seqs))
