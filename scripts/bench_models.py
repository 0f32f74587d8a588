"""Decode speed by model: tokens/s of each `model.cell` at batch 1 and 64 (experiment=architecture).

    python scripts/bench_models.py [--models lstm,transformer] [--batches 1,64] [--max-len 128]
                                   [--vocab 89] [--decoders greedy,sample] [--repeats 3]

Each model is built from the composed config `+experiment=architecture model=<cell>` (the
sizes `experiments/architecture` compares; random weights: speed does not depend on them)
through the models table and `make_step_fn`, exactly as the pipeline builds it. EOS is masked
out of the logits, so every row decodes exactly max_len tokens (with a Transformer, every step
attends over its KV cache of max_len positions). Per model, decoder and batch it prints the
compile time of the first call, the best of `--repeats` warm calls and tokens/s = batch x
max_len / s. Timings are for this machine only; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from types import SimpleNamespace as NS

import jax
import numpy as np

from seqgen.decoding import decode
from seqgen.models import build_model, count_params, make_init_carry_fn, make_step_fn
from seqgen.tokens import EOS_ID

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def model_config(cell: str):
    """The `model` node of `+experiment=architecture model=<cell>`, as the CLI composes it."""
    from hydra import compose, initialize_config_dir

    from seqgen.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=architecture", f"model={cell}"])
    return cfg.model


def _no_eos(step_fn):
    def step(params, carry, tokens):
        carry, logits = step_fn(params, carry, tokens)
        return carry, logits.at[:, EOS_ID].set(-1e9)  # every row runs to max_len

    return step


def bench(cell: str, args: argparse.Namespace) -> list[tuple]:
    model = build_model(model_config(cell), args.vocab, 0)
    step_fn, params = make_step_fn(model)
    step_fn, init_carry = _no_eos(step_fn), make_init_carry_fn(model)
    rows = []
    for name in args.decoders.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            carry = init_carry(batch, args.max_len)

            def run(carry=carry, batch=batch, name=name):
                out = decode(step_fn, params, carry, cfg=NS(name=name), max_len=args.max_len,
                             vocab_size=args.vocab, key=0, loop="scan")  # fmt: skip
                return jax.block_until_ready(out.tokens)

            t0 = time.perf_counter()
            run()
            compile_s = time.perf_counter() - t0
            best = min(_timed(run) for _ in range(args.repeats))
            rows.append((cell, count_params(model), name, batch, compile_s, best,
                         batch * args.max_len / best))  # fmt: skip
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lstm,transformer")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--decoders", default="greedy,sample")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=89)  # the folk vocabulary
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, "
          f"{jax.devices()[0].platform}, max_len {args.max_len}, vocab {args.vocab}")  # fmt: skip
    print("| model | params | decoder | batch | compile s | decode s | tokens/s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for cell in args.models.split(","):
        for r in bench(cell, args):
            print(f"| {r[0]} | {r[1]:,} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.3f} | "
                  f"{np.round(r[6]):,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
