"""Large studies: metrics counted chunk by chunk equal the one-chunk values, and a decoder
streamed to disk (`decode.stream_rows`) gives the samples and metrics of the ordinary path."""

import json
import logging

import numpy as np
import pytest
from conftest import TINY, compose

from seqgen.experiment import run_experiment
from seqgen.metrics import Generations, abc_rates
from seqgen.metrics.abc import key_rates
from seqgen.metrics.diversity import DiversityCounts
from seqgen.metrics.repetition import RepetitionCounts
from seqgen.metrics.stream import StreamCounts
from seqgen.metrics.table import compute_stream


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
    return {
        "self_bleu": div.self_bleu(),
        **{f"distinct_{n}": div.distinct(n) for n in (1, 2, 3, 4)},
        "ent_4": div.entropy(4),
        "unique": div.unique(),
        "zipf": div.zipf(),
        "seq_rep": rep.seq_rep(),
        "rep_pct": rep.rep_pct(),
        **{f"rep_{w}": v for w, v in rep.rep_l().items()},
    }


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


@pytest.mark.slow  # trains or runs the pipeline: the full suite runs it
def test_a_streamed_study_equals_the_ordinary_path(cache_dir, tmp_path, caplog):
    base = [*TINY, "decoder=sample", "decode.num_samples=40", "decode.batch_size=16"]
    ordinary = run_experiment(compose(base), out_dir=tmp_path / "a")
    with caplog.at_level(logging.WARNING, logger="seqgen"):
        streamed = run_experiment(compose([*base, "decode.stream_rows=12"]), out_dir=tmp_path / "b")
    a, b = ordinary["results"][0]["metrics"], streamed["results"][0]["metrics"]
    skipped = [k for k in a if k not in b]
    assert skipped and all(k.startswith("oracle/") for k in skipped)  # TINY has an oracle
    assert set(b) <= set(a)  # the study's keys are the table's
    (line,) = [r.getMessage() for r in caplog.records if "not computed" in r.getMessage()]
    assert all(k in line for k in skipped), line  # one line names each skipped key
    for k in b:
        if not k.startswith("time/"):
            assert b[k] == pytest.approx(a[k], rel=1e-9), k
    for name in ("samples.jsonl", "samples/sample.txt"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    rows = [json.loads(x) for x in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert [r["sample_index"] for r in rows] == list(range(40))  # each row once, in order


def test_a_study_checks_the_same_abc_tunes_as_the_whole_set():
    """`abc/*` of a study: the seeded subset `abc_rates` draws from all N tunes, collected
    chunk by chunk (a different draw, e.g. from each chunk, would check other tunes)."""
    good = "X:1\nM:2/4\nL:1/8\nK:D\n|:AB cd|ef ga:|\n"
    bad_bars = "X:1\nM:2/4\nL:1/8\nK:D\n|:AB cd e|ef:|\n"
    texts = [[good, bad_bars, "no tune at all"][i % 3] + "%" * (i % 5) for i in range(12)]
    seqs = [np.arange(4, 4 + i % 7) for i in range(12)]
    counts = StreamCounts(
        12,
        rows=5,
        seed=4,
        self_bleu_samples=5,
        vocab_size=20,
        dataset="folk",
        abc_subset=5,
        abc_timeout_s=30.0,
    )
    for a in range(0, 12, 4):
        counts.add(Generations(seqs[a : a + 4], ended=[True] * 4, texts=texts[a : a + 4]))
    got = compute_stream(counts)
    want = abc_rates(texts, subset=5, seed=4, timeout_s=30.0)
    assert (got["abc/parse_rate"], got["abc/bar_ok_rate"]) == pytest.approx(want, nan_ok=True)
    keys = key_rates(texts, subset=5, seed=4, timeout_s=30.0)
    assert (got["abc/in_key_rate"], got["abc/in_key_notes"]) == pytest.approx(keys, nan_ok=True)
    assert 0 < want[0] < 1  # the subset holds parsed and unparsed tunes: a wrong draw differs
