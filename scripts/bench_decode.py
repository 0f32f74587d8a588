"""Decoding benchmark: tokens/s and compile time of the scan decoders, beside three references.

    python scripts/bench_decode.py [--quick] [--max-len 128] [--batches 1,64,1024] [--out FILE]
    python scripts/bench_decode.py --sharded [--cpu-devices 8] --max-len 64   # all devices
    python scripts/bench_decode.py --profile DIR [--profile-decoder NAME]     # where time goes
    python scripts/bench_decode.py --loops [--batches 1,64]    # every decode.loop, top-p method

Model: `seqgen.models.LanguageModel` (LSTM, hidden 512, embedding 128, vocabulary 100, random
weights) through `make_step_fn` (`bench_timing.build`, beside the timing helpers every mode
shares). EOS is masked out of the logits for every decoder and every reference, so each row
decodes exactly max_len tokens and the work is the same everywhere.
For each decoder (greedy, sample with top_p=0.9, beam K=4 and K=16) and batch size it prints
- compile s: tracing + lowering + XLA compile of the first call (jax.monitoring events);
  decode s: best warm call; tok/s: rows x max_len / s
  (rows = batch for greedy/sample, batch x K for beam: every live hypothesis is a row);
- (a) loop: the same model and decoding rule as a per-token `jax.jit` step in a Python loop
  that checks for EOS on the host after every token (the usual hand-written decoder);
- (b) torch: a `torch.nn.LSTM` + Linear Python-loop decoder of the same sizes (greedy and
  top-p sampling; when torch is installed: `pip install .[bench]`);
- (c) limit: the bare matrix products of one decode step (embedding projection, recurrent
  projection, output head) for the same rows, in a scan of max_len steps and timed alone; the
  decoder's fraction of it is limit_s / decode_s;
- (d) step: the model's own step function in a bare scan, fed its argmax and nothing else (no
  scores, no EOS or prompt bookkeeping, one output); the decoder's fraction of it, step_s /
  decode_s, is the share the decoder's own work leaves, and (c) / (d) the model's work beyond
  its matrix products (embedding gather, gate nonlinearities, the head's bias and mask);
- peak memory: RSS growth during the warm call (CPU), or device peak bytes (GPU).
A second table compares beam search with K beams at batch B to sampling at batch B x K.
`--sharded` prints instead, per decoder and batch, one device against the rows split over every
device (`decode(..., mesh=make_mesh())`; on CPU `--cpu-devices` virtual devices sharing the
machine's cores, set before JAX starts). `--profile DIR` writes a JAX profiler trace of warm
calls of one decoder to DIR (open it in TensorBoard / XProf or Perfetto) and prints the XLA
operations that took the most time (self time, summed over the calls, from the trace's xplane).
`--loops` prints, per batch, greedy / sample top_p=0.9 / beam K=4 under every `decode.loop`
variant (and top-p's other set methods, `processors.NUCLEUS_METHODS`, beside its bisection),
with the limit and the bare step timed in the same run.
Timings are for this machine only; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from functools import partial
from types import SimpleNamespace as NS
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from bench_timing import (
    DECODERS,
    EMBED,
    HIDDEN,
    VOCAB,
    Table,
    build,
    decoder_call,
    fmt,
    machine,
    round_robin,
    timed,
)

from seqgen.decoding import LOOPS, processors
from seqgen.parallel import make_mesh, replicate
from seqgen.tokens import BOS_ID, EOS_ID

# ----- (a) the per-token jitted Python loop -----


@partial(jax.jit, static_argnames=("step_fn", "rule"))
def _loop_token(params, carry, tok, key, t, top_p, *, step_fn, rule):
    carry, logits = step_fn(params, carry, tok)
    if rule == "greedy":
        return carry, jnp.argmax(logits, -1).astype(jnp.int32)
    logits = processors.top_p(logits, top_p)
    return carry, jax.random.categorical(jax.random.fold_in(key, t), logits).astype(jnp.int32)


@partial(jax.jit, static_argnames=("step_fn", "k"))
def _loop_beam_token(params, carry, tok, scores, *, step_fn, k):
    carry, logits = step_fn(params, carry, tok)  # rows B * K
    b = scores.shape[0]
    cand = scores[..., None] + jax.nn.log_softmax(logits, -1).reshape(b, k, -1)
    scores, idx = jax.lax.top_k(cand.reshape(b, -1), k)
    parent = (jnp.arange(b)[:, None] * k + idx // VOCAB).reshape(-1)
    carry = jax.tree.map(lambda x: x[parent], carry)
    return carry, (idx % VOCAB).reshape(-1).astype(jnp.int32), scores


def loop_decode(bench: Any, rows: int, rule: str, k: int = 1) -> jax.Array:
    """(a) the same model and rule as a per-token `jax.jit` step in a Python loop that checks
    for EOS on the host after every token (the usual hand-written decoder)."""
    step_fn, params, max_len = bench.step_fn, bench.params, bench.max_len
    carry = bench.init_carry(rows)
    tok = jnp.full((rows,), BOS_ID, jnp.int32)
    key = jax.random.key(0)
    scores = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)[None].repeat(rows // k, 0)
    out = []
    for t in range(max_len):
        if rule == "beam":
            carry, tok, scores = _loop_beam_token(params, carry, tok, scores, step_fn=step_fn, k=k)
        else:
            carry, tok = _loop_token(
                params, carry, tok, key, t, jnp.float32(0.9), step_fn=step_fn, rule=rule
            )
        out.append(tok)
        if bool(jnp.all(tok == EOS_ID)):  # the host check every hand-written loop makes
            break
    return jnp.stack(out, 1)


# ----- (b) PyTorch nn.LSTM Python-loop decoder -----


def torch_decoder(hidden: int):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    dev = "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"
    emb = torch.nn.Embedding(VOCAB, EMBED).to(dev)
    lstm = torch.nn.LSTM(EMBED, hidden, batch_first=True).to(dev)
    head = torch.nn.Linear(hidden, VOCAB).to(dev)

    def pick_threads(rows: int, rule: str) -> None:
        """Use torch's faster thread count for this size (1 often wins at small batches:
        OpenMP workers spin on a busy 2-core machine)."""
        best = (np.inf, 1)
        for threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            run(rows, 16, rule, pick=False)
            best = min(best, (time.perf_counter() - t0, threads))
        torch.set_num_threads(best[1])

    def run(rows: int, max_len: int, rule: str, pick: bool = True) -> Any:
        if pick:
            pick_threads(rows, rule)
        with torch.inference_mode():
            h = torch.zeros(1, rows, hidden, device=dev)
            c = torch.zeros(1, rows, hidden, device=dev)
            tok = torch.full((rows,), BOS_ID, dtype=torch.long, device=dev)
            out = []
            for _ in range(max_len):
                y, (h, c) = lstm(emb(tok)[:, None], (h, c))
                logits = head(y[:, 0])
                logits[:, EOS_ID] = -1e9
                if rule == "greedy":
                    tok = logits.argmax(-1)
                else:  # top-p 0.9, sorted once
                    probs = torch.softmax(logits, -1)
                    sp, si = probs.sort(-1, descending=True)
                    drop = (sp.cumsum(-1) - sp) >= 0.9
                    sp = sp.masked_fill(drop, 0.0)
                    tok = si.gather(1, torch.multinomial(sp, 1))[:, 0]
                out.append(tok)
                if bool((tok == EOS_ID).all()):
                    break
            return torch.stack(out, 1)

    return run


# ----- the modes -----

THROUGHPUT_COLUMNS = ["decoder", "batch", "rows", "compile s", "decode s", "tok/s",
                      "(a) loop tok/s", "x loop", "(b) torch tok/s", "x torch", "(c) limit tok/s",
                      "% of limit", "(d) step tok/s", "% of step", "peak MB"]  # fmt: skip


def throughput(bench: Any, args: Any) -> list[str]:
    """Every decoder at every batch against the four references, then beam vs sampling."""
    torch_run = torch_decoder(bench.hidden)
    table, decode_s = Table(THROUGHPUT_COLUMNS), {}
    for batch in bench.batches:
        for name, (_, k, _) in DECODERS.items():
            if batch * k > args.max_rows:
                table.row(
                    [name, str(batch), str(batch * k), f"skipped (--max-rows {args.max_rows})"]
                )
                continue
            decode_s[(name, batch)] = throughput_row(bench, args, table, name, batch, torch_run)
    return table.lines + beam_vs_sample(bench, args, decode_s)


def throughput_row(bench, args, table, name: str, batch: int, torch_run) -> float:
    """One decoder and batch: the decoder, limit and step in turns, then (a) and (b)."""
    cfg, k, rule = DECODERS[name]
    rows, max_len = batch * k, bench.max_len
    run = decoder_call(bench, cfg, batch, num_samples=1)
    first = timed(run, 0)[0]
    (warm,), limits, steps, (peak,) = round_robin(bench, [run], [rows], args.repeats)
    loop_s = timed(lambda: loop_decode(bench, rows, rule, k), 1)[1]
    torch_s = np.nan
    if torch_run is not None and rule != "beam":
        torch_run(rows, 16, rule)  # warm-up and thread choice, untimed
        torch_s = timed(lambda: torch_run(rows, max_len, rule, pick=False), 1)[1]
    tok = rows * max_len
    table.row([name, str(batch), str(rows), fmt(first, 2), fmt(warm, 3), fmt(tok / warm),
               fmt(tok / loop_s), fmt(loop_s / warm, 1), fmt(tok / torch_s),
               fmt(torch_s / warm, 1), fmt(tok / limits[rows]), fmt(100 * limits[rows] / warm),
               fmt(tok / steps[rows]), fmt(100 * steps[rows] / warm),
               fmt(peak / 2**20, 1)])  # fmt: skip
    return warm


def beam_vs_sample(bench: Any, args: Any, decode_s: dict) -> list[str]:
    """Beam search with K beams at batch B against sampling at batch B x K."""
    print()
    table = Table(["beam", "batch", "beam s", "sample s at batch x K", "ratio"])
    sample = DECODERS["sample top_p=0.9"][0]
    for (name, batch), warm in decode_s.items():
        _, k, rule = DECODERS[name]
        if rule != "beam" or batch * k > args.max_rows:
            continue
        ref = decode_s.get(("sample top_p=0.9", batch * k))
        if ref is None:
            ref = timed(decoder_call(bench, sample, batch * k), args.repeats)[1]
        table.row([name, str(batch), f"{warm:.3f}", f"{ref:.3f}", f"{warm / ref:.2f}"])
    return ["", *table.lines]


def loops(bench: Any, args: Any) -> list[str]:
    """Every loop variant (`decode(..., loop=...)`) of greedy, sample top_p=0.9 and beam K=4,
    and top-p's other set methods beside bisection. Per batch every cell is compiled first,
    then all are timed round-robin with the limit and the bare step."""
    table = Table(["decoder", "batch", "rows", "loop", "compile s", "decode s", "tok/s",
                   "% of limit", "% of step"])  # fmt: skip
    cells = [(n, lp, "bisect") for n in list(DECODERS)[:3] for lp in LOOPS[1:]]
    cells += [("sample top_p=0.9", "scan", m) for m in processors.NUCLEUS_METHODS if m != "bisect"]
    backend, default_method = jax.default_backend(), processors.nucleus_method()
    for batch in bench.batches:
        runs, firsts = [], []
        for name, loop, method in cells:
            call = decoder_call(bench, DECODERS[name][0], batch, loop=loop)

            def run(call=call, method=method):
                processors.NUCLEUS_METHOD[backend] = method  # read when decode builds its flags
                return call()

            runs.append(run)
            firsts.append(timed(run, 0)[0])  # compile (and one call)
        rows = [batch * DECODERS[name][1] for name, _, _ in cells]
        best, limits, steps, _ = round_robin(bench, runs, set(rows), args.repeats)
        processors.NUCLEUS_METHOD[backend] = default_method
        for (name, loop, method), r, first, warm in zip(cells, rows, firsts, best, strict=True):
            label = loop if method == "bisect" else f"{loop}, top-p by {method}"
            table.row([name, str(batch), str(r), label, fmt(first, 2), fmt(warm, 3),
                       fmt(r * bench.max_len / warm), fmt(100 * limits[r] / warm),
                       fmt(100 * steps[r] / warm)])  # fmt: skip
    return table.lines


def sharded(bench: Any, args: Any) -> list[str]:
    """One device against the rows split over every device, per decoder and batch."""
    mesh = make_mesh()
    on_mesh = replicate(bench.params, mesh)  # once, as the pipeline does (not a per-call copy)
    table = Table(["decoder", "batch", "rows", "devices", "1 device s", "sharded s",
                   "1 device tok/s", "sharded tok/s", "speed-up", "sharded compile s"])  # fmt: skip
    for batch in bench.batches:
        for name, (cfg, k, _) in DECODERS.items():
            rows = batch * k
            if rows > args.max_rows:
                continue
            _, one, _ = timed(decoder_call(bench, cfg, batch), args.repeats)
            first, sh, _ = timed(
                decoder_call(bench, cfg, batch, params=on_mesh, mesh=mesh), args.repeats
            )
            tok = rows * bench.max_len
            table.row([name, str(batch), str(rows), str(mesh.size), fmt(one, 3), fmt(sh, 3),
                       fmt(tok / one), fmt(tok / sh), fmt(one / sh, 2), fmt(first, 2)])  # fmt: skip
    return table.lines


def self_times(xplane: str) -> dict[str, float]:
    """Self time (ns) of each XLA operation in an .xplane.pb: its duration minus the events it
    encloses on the same thread line (a while loop's time is its body's ops, not itself)."""
    from jax.profiler import ProfileData

    total: dict[str, float] = {}
    for plane in ProfileData.from_file(xplane).planes:
        for line in plane.lines:
            if line.name == "python":  # the host's Python frames, not XLA operations
                continue
            stack: list[list] = []  # [end_ns, name, self_ns]
            events = sorted(line.events, key=lambda e: (e.start_ns, -e.duration_ns))
            for ev in events + [None]:
                while stack and (ev is None or ev.start_ns >= stack[-1][0]):
                    end, name, own = stack.pop()
                    total[name] = total.get(name, 0.0) + own
                if ev is None:
                    break
                if stack:
                    stack[-1][2] -= ev.duration_ns
                stack.append([ev.end_ns, ev.name, float(ev.duration_ns)])
    return total


def profile(bench: Any, args: Any) -> list[str]:
    """A profiler trace of warm calls of one decoder and the XLA operations that took longest."""
    cfg, k, _ = DECODERS[args.profile_decoder]
    batch, max_len = bench.batches[0], bench.max_len
    run = decoder_call(bench, cfg, batch, mesh=make_mesh() if args.sharded else None)
    jax.block_until_ready(run())  # compile outside the trace
    calls = max(1, args.repeats)
    with jax.profiler.trace(args.profile):
        t0 = time.perf_counter()
        for _ in range(calls):
            jax.block_until_ready(run())
        wall = (time.perf_counter() - t0) / calls
    planes = sorted(glob.glob(os.path.join(args.profile, "**", "*.xplane.pb"), recursive=True))
    own = self_times(planes[-1])
    # the CPU runtime's own events (ThunkExecutor::Execute, its waits) wrap the operations
    runtime = {n: t for n, t in own.items() if n.startswith("ThunkExecutor")}
    own = {n: t for n, t in own.items() if n not in runtime}
    busy = sum(own.values())
    print(
        f"profile: {args.profile_decoder}, batch {batch} ({batch * k} rows), max_len "
        f"{max_len}, {calls} warm calls, {1e3 * wall:.2f} ms per call under the profiler, "
        f"{max_len} steps: {1e6 * wall / max_len:.1f} us per step; trace: {planes[-1]}"
    )
    print(f"operations: {busy / calls / 1e6:.2f} ms per call; CPU runtime (thunk executor, "
          f"waits included): {sum(runtime.values()) / calls / 1e6:.2f} ms per call")  # fmt: skip
    table = Table(["XLA operation", "self ms per call", "us per step", "% of op time"])
    for name, ns in sorted(own.items(), key=lambda x: -x[1])[: args.profile_top]:
        per_call = ns / calls
        table.row([name, f"{per_call / 1e6:.3f}", f"{per_call / 1e3 / max_len:.2f}",
                   f"{100 * ns / busy:.1f}"])  # fmt: skip
    return table.lines


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="hidden 128, max_len 16, batches 1,8")
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--batches", type=str, default=None, help="comma-separated, e.g. 1,64,1024")
    ap.add_argument("--max-rows", type=int, default=4096, help="skip cells with more rows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=str, default=None, help="also write the tables (markdown)")
    ap.add_argument("--sharded", action="store_true", help="one device vs all devices")
    ap.add_argument("--cpu-devices", type=int, default=8, help="virtual CPU devices (--sharded)")
    ap.add_argument("--profile", type=str, default=None, help="write a profiler trace here")
    ap.add_argument("--profile-decoder", default="sample top_p=0.9", choices=list(DECODERS))
    ap.add_argument("--profile-top", type=int, default=15, help="operations to print")
    ap.add_argument("--loops", action="store_true", help="a row per loop variant and top-p method")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.sharded:  # read when the CPU backend starts, i.e. at the first device query below
        flag = f"--xla_force_host_platform_device_count={args.cpu_devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    hidden = 128 if args.quick else HIDDEN
    bench = NS(hidden=hidden, max_len=args.max_len or (16 if args.quick else 128))
    default = "1,8" if args.quick else "1,64,1024"
    bench.batches = [int(b) for b in (args.batches or default).split(",")]
    bench.step_fn, bench.params, bench.init_carry = build(hidden)
    head = (
        f"machine: {machine()}; jax {jax.__version__}; seqgen.models.LanguageModel: LSTM hidden "
        f"{hidden}, embedding {EMBED}, vocabulary {VOCAB}; max_len {bench.max_len}; EOS masked "
        "(every row decodes max_len tokens)"
    )
    print(head, flush=True)
    mode = profile if args.profile else loops if args.loops else sharded if args.sharded else None
    lines = (mode or throughput)(bench, args)
    if args.out:
        with open(args.out, "w") as f:
            f.write(head + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
