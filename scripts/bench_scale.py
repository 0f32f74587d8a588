"""Time and peak host memory of a study (`evaluate.study_decoder`) as the sample count grows.

    python scripts/bench_scale.py [--sizes 1000 10000 100000] [--prompts 100] [--max-len 256]

For each size, a fresh process loads the default model (2x128 LSTM on the folk tunes, from the
model cache: train it once with `python -m seqgen.run`), and studies pure sampling from
`--prompts` held-out openings (size / prompts samples each, continued to `--max-len`), the
samples streamed into a temporary run folder. It prints, per phase, the seconds spent and the
peak resident memory (RSS, sampled every 10 ms) while in it: decode (the compiled calls),
metrics (cutting continuations, counting n-grams, scoring; the ABC checks are off, as their
200 tunes take the same minutes at every size), writing (sample records,
samples.jsonl, samples/*.txt), and the bytes of the distinct n-gram tables the exact diversity
metrics keep (`DiversityCounts.bytes_held`). Goal: time linear in the size, memory flat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PHASES = ("decode", "metrics", "writing")


class Meter:
    """Seconds and peak RSS per phase; the phase is whatever the pipeline is inside."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.phase: str | None = None
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.peak = dict.fromkeys(PHASES, 0)
        self.start_rss = self.proc.memory_info().rss
        self.counts = None
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            phase, rss = self.phase, self.proc.memory_info().rss
            if phase is not None:
                self.peak[phase] = max(self.peak[phase], rss)
            time.sleep(0.01)

    @contextlib.contextmanager
    def inside(self, phase: str):
        outer, self.phase = self.phase, phase
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0
            self.peak[phase] = max(self.peak[phase], self.proc.memory_info().rss)
            self.phase = outer


def instrument(meter: Meter) -> None:
    """Wrap the study's steps (module attributes `study_decoder` looks up) in their phase."""
    from seqgen import evaluate

    def timed(phase, fn):
        def wrapper(*args, **kwargs):
            with meter.inside(phase):
                return fn(*args, **kwargs)

        return wrapper

    decode_chunks = evaluate.decode_chunks

    def timed_chunks(*args, **kwargs):
        chunks = decode_chunks(*args, **kwargs)
        while True:
            with meter.inside("decode"):
                item = next(chunks, None)
            if item is None:
                return
            yield item

    evaluate.decode_chunks = timed_chunks
    evaluate.generations = timed("metrics", evaluate.generations)
    evaluate.sample_records = timed("writing", evaluate.sample_records)
    evaluate.compute_stream = timed("metrics", evaluate.compute_stream)
    add = evaluate.StreamCounts.add

    def counted(self, gen):
        meter.counts = self  # its `diversity.bytes_held()`, once the study is done
        with meter.inside("metrics"):
            add(self, gen)

    evaluate.StreamCounts.add = counted


def run_in_process(size: int, prompts: int, max_len: int) -> dict:
    from hydra import compose, initialize_config_dir

    from seqgen.compose import CONF_DIR
    from seqgen.config import register_configs
    from seqgen.data.corpus import load_corpus
    from seqgen.evaluate import decoder_key, study_decoder
    from seqgen.model_store import ModelSpec, get_model
    from seqgen.outputs import write_samples
    from seqgen.prompts import prepare_prompts

    register_configs()
    overrides = [
        "decoder=sample",
        f"decode.num_prompts={prompts}",
        f"decode.num_samples={size // prompts}",
        f"decode.max_len={max_len}",
        "metrics.abc_subset=0",  # music21 on a fixed 200 tunes: minutes, the same at every size
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    corpus = load_corpus(cfg.data, int(cfg.seed))
    model = get_model(ModelSpec.of(cfg), corpus, cfg.cache_dir)
    pr = prepare_prompts(cfg.decode, corpus, cfg.get("constraint"), cfg.data.unknown)
    meter = Meter()
    instrument(meter)
    out_dir = Path(tempfile.mkdtemp(prefix="bench_scale_"))

    def on_samples(rows, continued):
        with meter.inside("writing"):
            write_samples(corpus.name, rows, out_dir, 0, append=continued)

    t0 = time.perf_counter()
    study = (cfg.decode, cfg.metrics, int(cfg.seed), cfg.decoder, corpus, model, pr.prompts)
    result, _ = study_decoder(*study, decoder_key(0, 0), None, on_samples)
    wall = time.perf_counter() - t0
    with open(out_dir / "samples.jsonl") as f:
        written = sum(1 for _ in f)
    shutil.rmtree(out_dir)
    mib = 2**20
    return {
        "size": written,
        "wall_s": wall,
        "start_mib": meter.start_rss / mib,
        "phases": {p: (meter.seconds[p], meter.peak[p] / mib) for p in PHASES},
        "self_bleu4": result["metrics"]["diversity/self_bleu4"],
        "distinct_4": result["metrics"]["diversity/distinct_4"],
        "counts_mib": meter.counts.diversity.bytes_held() / mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_in_process(args.one, args.prompts, args.max_len)))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args}")
    print("| samples | phase | seconds | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(size), "--prompts", str(args.prompts)]
        cmd += ["--max-len", str(args.max_len)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            sys.exit(out.returncode)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        for phase, (sec, peak) in res["phases"].items():
            print(f"| {res['size']:,} | {phase} | {sec:.1f} | {peak:.0f} |")
        print(
            f"| {res['size']:,} | **total** | **{res['wall_s']:.1f}** | (start "
            f"{res['start_mib']:.0f}; distinct n-gram tables {res['counts_mib']:.0f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
