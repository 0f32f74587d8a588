"""Time every metric on synthetic generations (default: 1,000 sequences of length 256).

    python scripts/bench_metrics.py [--num 1000] [--len 256] [--vocab 5000] [--abc 20]

Prints seconds per metric and the total of `seqgen.metrics.compute` (ABC parsing timed separately,
on `--abc` tunes, because music21 is slow and runs on a subset). Target: the token metrics
for 1,000 x 256 in <= 10 s on a 2-core CPU. Results: scripts/bench_metrics_results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from seqgen.metrics import (
    Generations,
    abc_rates,
    compute,
    distinct_n,
    generation_perplexity,
    ngram_entropy,
    rep_l,
    repetition_percent,
    self_bleu,
    seq_rep_n,
    unique_sequences,
    zipf_coefficient,
)

TUNE = "M:6/8\nL:1/8\nK:D\nA|dfa afd|e2f gfe|dfa afd|e3 d2:|\n"


def make_generations(num: int, length: int, vocab: int, seed: int = 0):
    """Zipf-distributed tokens, a quarter of the sequences ending in a repeating loop."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    seqs = []
    for i in range(num):
        n = length
        s = rng.choice(vocab, size=n, p=p) + 4
        if i % 4 == 0:
            block = s[:5]
            s[n // 2 :] = np.resize(block, n - n // 2)
        seqs.append(s.astype(np.int32))
    ended = rng.random(num) < 0.7
    logprobs = [-rng.exponential(3.0, size=s.size) for s in seqs]
    eos = -rng.exponential(3.0, size=num)
    return seqs, ended, logprobs, eos


def timed(name: str, fn, results: dict) -> None:
    t0 = time.perf_counter()
    fn()
    results[name] = time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--abc", type=int, default=20)
    args = ap.parse_args()
    seqs, ended, lps, eos = make_generations(args.num, args.len, args.vocab)
    r: dict[str, float] = {}
    timed("gen/ppl", lambda: generation_perplexity(lps, ended=ended, eos_logprob=eos), r)
    for n in range(1, 5):
        timed(f"diversity/distinct_{n}", lambda n=n: distinct_n(seqs, n), r)
    timed("diversity/self_bleu4", lambda: self_bleu(seqs), r)
    timed("diversity/ent_4", lambda: ngram_entropy(seqs, 4), r)
    timed("diversity/unique_seq", lambda: unique_sequences(seqs), r)
    timed("zipf", lambda: zipf_coefficient(seqs), r)
    timed("repetition/seq_rep_4", lambda: seq_rep_n(seqs, 4), r)
    timed("repetition/rep_pct", lambda: repetition_percent(seqs), r)
    timed("repetition/rep_16,32,128", lambda: rep_l(seqs), r)
    gen = dict(ended=ended, tempered_logprobs=lps, eos_tempered_logprobs=eos)
    timed("compute (all token metrics)", lambda: compute(Generations(seqs, **gen)), r)
    tunes = [TUNE] * args.abc
    timed(f"abc/* ({args.abc} tunes, music21)", lambda: abc_rates(tunes, subset=args.abc), r)
    cpus = os.cpu_count()
    print(f"# {args.num} sequences of length {args.len}, vocab {args.vocab}")
    print(f"# {platform.processor() or platform.machine()}, {cpus} CPUs, numpy {np.__version__}")
    for name, sec in r.items():
        print(f"{name:40s} {sec:8.3f} s")


if __name__ == "__main__":
    main()
