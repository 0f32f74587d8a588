"""Large studies: metrics counted chunk by chunk equal the one-chunk values, and a decoder
streamed to disk (`decode.stream_rows`) gives the samples and metrics of the ordinary path."""

import json

import numpy as np
import pytest
from conftest import TINY, compose

from seqgen.experiment import run_experiment
from seqgen.metrics.diversity import DiversityCounts
from seqgen.metrics.repetition import RepetitionCounts


def _generations(rng, n, vocab, loops=True):
    """Random lengths (some empty), a few repeated sequences and loops: every metric counts."""
    seqs = [rng.integers(4, vocab, size=rng.integers(0, 30)) for _ in range(n)]
    seqs[3] = seqs[1].copy()
    if loops:
        seqs[5] = np.tile([7, 8, 9], 8)
    return seqs


def _chunked(seqs, cuts, vocab, **kwargs):
    div = DiversityCounts(len(seqs), vocab_size=vocab, **kwargs)
    rep = RepetitionCounts()
    for a, b in zip([0, *cuts], [*cuts, len(seqs)]):
        div.add(seqs[a:b])
        rep.add(seqs[a:b])
    return {**div.metrics(), **rep.metrics()}


@pytest.mark.parametrize("vocab", [6, 60, 70000])  # 70000^4 > 2^63: the n-gram keys are bytes
def test_chunked_counts_equal_one_chunk(vocab):
    rng = np.random.default_rng(vocab)
    seqs = _generations(rng, 120, vocab)
    kwargs = {"seed": 3, "self_bleu_samples": 50}
    whole = _chunked(seqs, [], vocab, **kwargs)
    assert all(np.isfinite(v) for v in whole.values())
    for cuts in ([1, 2, 60], [40, 80], list(range(7, 120, 7))):
        parts = _chunked(seqs, cuts, vocab, **kwargs)
        for k, v in whole.items():
            assert parts[k] == pytest.approx(v, rel=1e-12, abs=1e-15), (k, cuts)


def test_self_bleu_hypotheses_score_against_every_chunk():
    """A hypothesis's only match is in another chunk: counts that forgot earlier chunks, or
    counted the hypothesis as its own reference, would score it 0 or 1."""
    seqs = [np.array([10, 11, 12, 13]), np.array([20, 21, 22, 23]), np.array([10, 11, 12, 13])]
    div = DiversityCounts(3, self_bleu_samples=3, vocab_size=30)
    for s in seqs:
        div.add([s])
    hyps, scores = div.self_bleu_scores()
    # 0 and 2 match each other exactly (BLEU 1); 1 matches nothing (no unigram match: 0)
    np.testing.assert_array_equal(hyps, [0, 1, 2])
    np.testing.assert_allclose(scores, [1.0, 0.0, 1.0])


def test_a_streamed_study_equals_the_ordinary_path(cache_dir, tmp_path):
    base = [*TINY, "decoder=sample", "decode.num_samples=40", "decode.batch_size=16"]
    ordinary = run_experiment(compose(base), out_dir=tmp_path / "a")
    streamed = run_experiment(compose([*base, "decode.stream_rows=12"]), out_dir=tmp_path / "b")
    a, b = ordinary["results"][0]["metrics"], streamed["results"][0]["metrics"]
    for k, v in a.items():
        if k.startswith("time/") or k.startswith("oracle/") or k.startswith("search/"):
            continue
        assert b[k] == pytest.approx(v, rel=1e-9), k
    for name in ("samples.jsonl", "samples/sample.txt"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    rows = [json.loads(x) for x in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert [r["sample_index"] for r in rows] == list(range(40))  # each row once, in order
