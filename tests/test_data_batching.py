"""Batches: shifted inputs/targets, chunking, masks, coverage, determinism."""

import numpy as np

from seqgen.data.batching import (
    batch_iterator,
    eval_batches,
    make_examples,
    make_stream_examples,
    num_target_tokens,
)
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID

SEQS = [np.arange(4, 4 + n, dtype=np.int32) for n in (0, 1, 3, 7, 12)]


def test_examples_are_shifted_and_chunked():
    max_len = 5
    for s in SEQS:
        ex = make_examples([s], max_len)
        assert np.array_equal(np.concatenate([t for _, t in ex]), np.append(s, EOS_ID))
        assert np.array_equal(np.concatenate([x for x, _ in ex]), np.insert(s, 0, BOS_ID))
        for k, (x, y) in enumerate(ex):
            assert len(x) == len(y) <= max_len
            assert np.array_equal(x[1:], y[:-1])
            if k > 0:  # a later chunk starts with the token before its first target
                assert x[0] == ex[k - 1][1][-1]


def test_empty_sequence_predicts_eos_from_bos():
    ((x, y),) = make_examples([np.zeros(0, np.int32)], 4)
    assert x.tolist() == [BOS_ID] and y.tolist() == [EOS_ID]


def test_eval_batches_cover_every_target_once():
    batches = eval_batches(SEQS, batch_size=3, max_len=5)
    assert all(b.inputs.shape == (3, 5) and b.mask.dtype == np.float32 for b in batches)
    mask = np.concatenate([b.mask for b in batches])
    targets = np.concatenate([b.targets for b in batches])
    inputs = np.concatenate([b.inputs for b in batches])
    assert mask.sum() == num_target_tokens(SEQS) == sum(len(s) + 1 for s in SEQS)
    want = np.sort(np.concatenate([np.append(s, EOS_ID) for s in SEQS]))
    assert np.array_equal(np.sort(targets[mask == 1]), want)
    assert (targets[mask == 0] == PAD_ID).all() and (inputs[mask == 0] == PAD_ID).all()
    assert eval_batches([], 3, 5) == []


def test_batch_iterator_is_seeded_and_covers_each_epoch():
    n_examples = len(make_examples(SEQS, 5))  # 1 + 1 + 1 + 2 + 3 = 8
    it = batch_iterator(SEQS, batch_size=4, max_len=5, seed=0)
    first = [next(it) for _ in range(n_examples // 4)]
    again = batch_iterator(SEQS, batch_size=4, max_len=5, seed=0)
    other = batch_iterator(SEQS, batch_size=4, max_len=5, seed=1)
    assert all(np.array_equal(b.inputs, next(again).inputs) for b in first)
    assert not all(np.array_equal(b.inputs, next(other).inputs) for b in first)
    mask = np.concatenate([b.mask for b in first])
    assert mask.sum() == num_target_tokens(SEQS)  # one epoch = every example once


def test_batch_iterator_fills_batches_from_a_tiny_corpus():
    it = batch_iterator(SEQS[:2], batch_size=5, max_len=8, seed=0)
    for _ in range(3):
        b = next(it)
        assert b.inputs.shape == b.targets.shape == b.mask.shape == (5, 8)
        assert b.inputs.dtype == b.targets.dtype == np.int32
        assert (b.mask.sum(1) > 0).all()
        assert (b.inputs[:, 0] == BOS_ID).all()


STREAMS = [np.arange(4, 4 + n, dtype=np.int32) for n in (1, 5, 11)]


def test_stream_windows_tile_the_stream_without_eos():
    max_len = 5
    for s in STREAMS:
        ex = make_stream_examples([s], max_len)
        assert len(ex) == -(-len(s) // max_len)
        # the targets, window after window, are the stream itself: no EOS, nothing twice
        assert np.array_equal(np.concatenate([y for _, y in ex]), s)
        for k, (x, y) in enumerate(ex):
            assert len(x) == len(y) <= max_len and x[0] == BOS_ID  # a fresh carry
            assert np.array_equal(x[1:], y[:-1])  # next-token targets
            assert np.array_equal(y, s[k * max_len : (k + 1) * max_len])


def test_stream_eval_batches_cover_every_stream_token_once():
    batches = eval_batches(STREAMS, batch_size=2, max_len=4, stream=True)
    mask = np.concatenate([b.mask for b in batches]).astype(bool)
    targets = np.concatenate([b.targets for b in batches])
    assert mask.sum() == num_target_tokens(STREAMS, stream=True) == sum(map(len, STREAMS))
    assert np.array_equal(targets[mask], np.concatenate(STREAMS))  # in order, once each
    assert EOS_ID not in targets[mask]
    it = batch_iterator(STREAMS, batch_size=5, max_len=4, seed=0, stream=True)
    epoch = next(it)  # 1 + 2 + 3 = 6 windows; a batch of 5 draws 5 distinct ones
    assert EOS_ID not in epoch.targets and (epoch.inputs[:, 0] == BOS_ID).all()
