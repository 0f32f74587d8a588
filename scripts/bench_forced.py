"""Forced words: what `decoder.force` costs beside plain beam search.

    python scripts/bench_forced.py [--max-len 64] [--batches 1,64] [--hidden 512] [--repeats 3]

Model and timing as `bench_decode.py` (`bench_timing`: seqgen's LSTM with random weights, EOS
masked so every row decodes max_len tokens). Per batch size, beam K=4 without `force`, with one
2-token phrase, and with three sets (a phrase, a disjunctive set of two phrases, a 4-token
phrase: 9 banks); compile s and the best warm call, and the ratio to plain beam. Printed, never
asserted.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace as NS

from bench_timing import Table, build, decoder_call, fmt, machine, timed

FORCES = {
    "none": [],
    "1 phrase": [[5, 6]],
    "3 sets": [[5, 6], [[7, 8], [9, 10, 11]], [12, 13, 14, 15]],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--batches", type=str, default="1,64")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--beam-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bench = NS(max_len=args.max_len)
    bench.step_fn, bench.params, bench.init_carry = build(args.hidden)
    print(f"{machine()}; LSTM hidden {args.hidden}, max_len {args.max_len}, K={args.beam_size}")
    table = Table(["force", "batch", "compile s", "decode s", "x plain beam"])
    for batch in (int(b) for b in args.batches.split(",")):
        plain = None
        for name, force in FORCES.items():
            cfg = NS(name="beam", beam_size=args.beam_size, force=force)
            compile_s, best, _ = timed(decoder_call(bench, cfg, batch), args.repeats)
            plain = best if plain is None else plain
            table.row([name, str(batch), fmt(compile_s, 2), fmt(best, 3), fmt(best / plain, 2)])


if __name__ == "__main__":
    main()
