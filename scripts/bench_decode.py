"""Decoding benchmark: tokens/s and compile time of the scan decoders, beside three references.

    python scripts/bench_decode.py [--quick] [--max-len 128] [--batches 1,64,1024] [--out FILE]
    python scripts/bench_decode.py --sharded [--cpu-devices 8] --max-len 64   # all devices
    python scripts/bench_decode.py --profile DIR [--profile-decoder NAME]     # where time goes
    python scripts/bench_decode.py --loops [--batches 1,64]    # every decode.loop, top-p method

Model: `seqgen.models.LanguageModel` (LSTM, hidden 512, embedding 128, vocabulary 100, random
weights) through `make_step_fn`. EOS is masked out of the logits for every decoder and every
reference, so each row decodes exactly max_len tokens and the work is the same everywhere.
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
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace as NS
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqgen.decoding import LOOPS, decode, processors
from seqgen.parallel import make_mesh, replicate
from seqgen.tokens import BOS_ID, EOS_ID

VOCAB, EMBED, HIDDEN = 100, 128, 512


# ----- model and the EOS-free step function shared by every decoder -----


def _hand_lstm(hidden: int, seed: int) -> tuple[Callable, Any, Callable]:
    """The same math as LanguageModel(cell="lstm") for when seqgen.models cannot be imported
    (e.g. another flax version on an accelerator machine)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape) / np.sqrt(shape[0]), jnp.float32)

    params = {
        "embed": w(VOCAB, EMBED),
        "w_i": w(EMBED, 4 * hidden),
        "w_h": w(hidden, 4 * hidden),
        "b": jnp.zeros(4 * hidden, jnp.float32),
        "w_o": w(hidden, VOCAB),
        "b_o": jnp.zeros(VOCAB, jnp.float32),
    }

    def step_fn(params: Any, carry: Any, tokens: jax.Array) -> tuple[Any, jax.Array]:
        ((c, h),) = carry
        y = params["embed"][tokens] @ params["w_i"] + h @ params["w_h"] + params["b"]
        i, f, g, o = jnp.split(y, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return ((c, h),), h @ params["w_o"] + params["b_o"]

    def init_carry(batch: int) -> Any:
        zeros = jnp.zeros((batch, hidden), jnp.float32)
        return ((zeros, zeros),)

    return step_fn, params, init_carry


def build(hidden: int, seed: int = 0) -> tuple[Callable, Any, Callable, str]:
    try:
        from flax import nnx

        from seqgen.models import LanguageModel, make_init_carry_fn, make_step_fn

        model = LanguageModel(
            VOCAB, cell="lstm", embed_size=EMBED, hidden_size=hidden, rngs=nnx.Rngs(seed)
        )
        step_fn, params = make_step_fn(model)
        init_carry, source = make_init_carry_fn(model), "seqgen.models.LanguageModel"
    except Exception as err:  # noqa: BLE001 - any import/version problem: same math by hand
        step_fn, params, init_carry = _hand_lstm(hidden, seed)
        source = f"hand-written LSTM step ({type(err).__name__} importing seqgen.models)"

    def bench_step(params: Any, carry: Any, tokens: jax.Array) -> tuple[Any, jax.Array]:
        carry, logits = step_fn(params, carry, tokens)
        return carry, logits.at[:, EOS_ID].set(-1e9)  # no row stops early

    return bench_step, params, init_carry, source


# ----- measurement helpers -----


class PeakMemory:
    """Peak RSS growth (CPU, sampled every 2 ms) or device peak bytes (GPU) inside a block."""

    def __enter__(self) -> PeakMemory:
        self.dev = jax.devices()[0]
        self.gpu = self.dev.platform != "cpu"
        self.peak = 0
        if self.gpu:
            return self
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.stop = threading.Event()

        def watch() -> None:
            while not self.stop.is_set():
                self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
                time.sleep(0.002)

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.gpu:
            stats = self.dev.memory_stats() or {}
            self.peak = int(stats.get("peak_bytes_in_use", 0))
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)


COMPILE_S = [0.0]  # trace + lowering + XLA compile time, from jax.monitoring events


def _on_event(event: str, duration: float, **kwargs: Any) -> None:
    if event.startswith("/jax/core/compile/") or "backend_compile" in event:
        COMPILE_S[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, int]:
    """(compile s of the first call, best warm call s, peak memory bytes of a warm call)."""
    COMPILE_S[0] = 0.0
    jax.block_until_ready(fn())
    first = COMPILE_S[0]
    best, peak = np.inf, 0
    for _ in range(repeats):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            best = min(best, time.perf_counter() - t0)
        peak = max(peak, mem.peak)
    return first, best, peak


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


def loop_decode(step_fn, params, init_carry, rows, max_len, rule, k=1):
    carry = init_carry(rows)
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


# ----- (c) the bare matrix products of a decode step -----


@partial(jax.jit, static_argnames=("max_len",))
def _matmuls(w_i, w_h, w_o, x, h, *, max_len):
    def body(carry, _):
        x, h = carry
        gates = x @ w_i + h @ w_h  # [R, 4H]
        h = gates[:, : h.shape[1]]
        logits = h @ w_o  # [R, V]
        return (x + logits[:, :1], h), None

    return jax.lax.scan(body, (x, h), None, length=max_len)[0]


def matmul_limit(rows: int, hidden: int, max_len: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    args = [
        jnp.asarray(rng.normal(size=s) * 0.01, jnp.float32)
        for s in [(EMBED, 4 * hidden), (hidden, 4 * hidden), (hidden, VOCAB)]
    ]
    x = jnp.ones((rows, EMBED), jnp.float32)
    h = jnp.ones((rows, hidden), jnp.float32)
    return timed(lambda: _matmuls(*args, x, h, max_len=max_len), repeats)[1]


@partial(jax.jit, static_argnames=("step_fn", "max_len"))
def _bare_steps(params, carry, tok, *, step_fn, max_len):
    def body(state, _):
        carry, tok = state
        carry, logits = step_fn(params, carry, tok)
        return (carry, jnp.argmax(logits, axis=-1).astype(tok.dtype)), None

    return jax.lax.scan(body, (carry, tok), None, length=max_len)[0][1]


def model_step_time(step_fn, params, init_carry, rows: int, max_len: int, repeats: int) -> float:
    """(d) the model's own step in a bare scan: `step_fn` fed its argmax, nothing else (no
    scores, no EOS or prompt bookkeeping, no outputs but the last token). The decoder's fraction
    of it is what the decoder's own work costs; the limit's fraction of it, the model's work
    beyond its matrix products (embedding gather, gate nonlinearities, the head's bias)."""
    carry, tok = init_carry(rows), jnp.full((rows,), BOS_ID, jnp.int32)
    run = lambda: _bare_steps(params, carry, tok, step_fn=step_fn, max_len=max_len)  # noqa: E731
    return timed(run, repeats)[1]


# ----- the benchmark -----


def machine() -> str:
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"{dev.device_kind} ({dev.platform})"
    model = platform.processor() or "cpu"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU, {model}"


DECODERS = {
    "greedy": (NS(name="greedy"), 1, "greedy"),
    "sample top_p=0.9": (NS(name="sample", top_p=0.9), 1, "sample"),
    "beam K=4": (NS(name="beam", beam_size=4), 4, "beam"),
    "beam K=16": (NS(name="beam", beam_size=16), 16, "beam"),
}


def fmt(x: float, digits: int = 0) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:,.{digits}f}"


def sharded_table(step_fn, params, init_carry, batches, max_len, args) -> list[str]:
    """One device against the rows split over every device, per decoder and batch."""
    mesh = make_mesh()
    n_dev = mesh.size
    on_mesh = replicate(params, mesh)  # once, as the pipeline does (not a per-call copy)
    cols = ["decoder", "batch", "rows", "devices", "1 device s", "sharded s", "1 device tok/s"]
    cols += ["sharded tok/s", "speed-up", "sharded compile s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    print(lines[0], flush=True)
    for batch in batches:
        for name, (cfg, k, _) in DECODERS.items():
            rows = batch * k
            if rows > args.max_rows:
                continue
            carry = init_carry(batch)
            times = {}
            for label, m in (("one", None), ("sharded", mesh)):
                times[label] = timed(
                    lambda cfg=cfg, carry=carry, m=m: (
                        decode(
                            step_fn,
                            params if m is None else on_mesh,
                            carry,
                            cfg=cfg,
                            max_len=max_len,
                            key=0,
                            vocab_size=VOCAB,
                            mesh=m,
                        ).tokens
                    ),
                    args.repeats,
                )
            one, sh = times["one"][1], times["sharded"][1]
            cells = [name, str(batch), str(rows), str(n_dev), fmt(one, 3), fmt(sh, 3)]
            cells += [fmt(rows * max_len / one), fmt(rows * max_len / sh), fmt(one / sh, 2)]
            cells += [fmt(times["sharded"][0], 2)]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    return lines


def loops_table(step_fn, params, init_carry, batches, max_len, hidden, args) -> list[str]:
    """Every loop variant (`decode(..., loop=...)`) of greedy, sample top_p=0.9 and beam K=4,
    and top-p's other set methods beside bisection. Per batch every cell is compiled first, then
    timed round-robin (`--repeats` rounds, one call of each cell, the limit and the bare step per
    round; best of the rounds), so a busy spell on a shared machine hits every cell alike."""
    cols = ["decoder", "batch", "rows", "loop", "compile s", "decode s", "tok/s", "% of limit",
            "% of step"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    print(lines[0], flush=True)
    cells = [(n, lp, "bisect") for n in list(DECODERS)[:3] for lp in LOOPS[1:]]
    cells += [("sample top_p=0.9", "scan", m) for m in processors.NUCLEUS_METHODS if m != "bisect"]
    backend, default_method = jax.default_backend(), processors.nucleus_method()
    for batch in batches:
        runs = []
        for name, loop, method in cells:
            cfg, k, _ = DECODERS[name]
            carry = init_carry(batch)

            def run(cfg=cfg, carry=carry, loop=loop, method=method):
                processors.NUCLEUS_METHOD[backend] = method  # read when decode builds its flags
                return decode(step_fn, params, carry, cfg=cfg, max_len=max_len, key=0,
                              vocab_size=VOCAB, loop=loop).tokens  # fmt: skip

            first = timed(run, 0)[0]  # compile (and one call)
            runs.append((name, batch * k, loop if method == "bisect" else f"{loop}, top-p by "
                         f"{method}", first, run))  # fmt: skip
        best = [np.inf] * len(runs)
        limits = {rows: np.inf for _, rows, *_ in runs}
        steps = dict(limits)
        for _ in range(args.repeats):
            for rows in limits:
                limits[rows] = min(limits[rows], matmul_limit(rows, hidden, max_len, 1))
                steps[rows] = min(
                    steps[rows], model_step_time(step_fn, params, init_carry, rows, max_len, 1)
                )
            for i, (*_, run) in enumerate(runs):
                best[i] = min(best[i], timed(run, 1)[1])
        processors.NUCLEUS_METHOD[backend] = default_method
        for (name, rows, label, first, _), warm in zip(runs, best, strict=True):
            row = [name, str(batch), str(rows), label, fmt(first, 2), fmt(warm, 3),
                   fmt(rows * max_len / warm), fmt(100 * limits[rows] / warm, 0),
                   fmt(100 * steps[rows] / warm, 0)]  # fmt: skip
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    return lines


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


def profile(step_fn, params, init_carry, batch, max_len, args) -> None:
    import glob

    cfg, k, _ = DECODERS[args.profile_decoder]
    carry = init_carry(batch)
    mesh = make_mesh() if args.sharded else None

    def run() -> Any:
        return decode(
            step_fn, params, carry, cfg=cfg, max_len=max_len, key=0, vocab_size=VOCAB, mesh=mesh
        ).tokens

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
        f"profile: {args.profile_decoder}, batch {batch} ({batch * k} rows), max_len {max_len}, "
        f"{calls} warm calls, {1e3 * wall:.2f} ms per call under the profiler, "
        f"{max_len} steps: {1e6 * wall / max_len:.1f} us per step; trace: {planes[-1]}"
    )
    print(
        f"operations: {busy / calls / 1e6:.2f} ms per call; CPU runtime (thunk executor, "
        f"waits included): {sum(runtime.values()) / calls / 1e6:.2f} ms per call"
    )
    print("| XLA operation | self ms per call | us per step | % of op time |")
    print("|---|---|---|---|")
    for name, ns in sorted(own.items(), key=lambda x: -x[1])[: args.profile_top]:
        per_call = ns / calls
        print(
            f"| {name} | {per_call / 1e6:.3f} | {per_call / 1e3 / max_len:.2f} | "
            f"{100 * ns / busy:.1f} |"
        )


def main() -> None:
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
    args = ap.parse_args()
    if args.sharded:  # read when the CPU backend starts, i.e. at the first device query below
        flag = f"--xla_force_host_platform_device_count={args.cpu_devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    hidden = 128 if args.quick else HIDDEN
    max_len = args.max_len or (16 if args.quick else 128)
    batches = [int(b) for b in (args.batches or ("1,8" if args.quick else "1,64,1024")).split(",")]

    step_fn, params, init_carry, source = build(hidden)
    head = (
        f"machine: {machine()}; jax {jax.__version__}; {source}: LSTM hidden {hidden}, "
        f"embedding {EMBED}, "
        f"vocabulary {VOCAB}; max_len {max_len}; EOS masked (every row decodes max_len tokens)"
    )
    print(head, flush=True)
    if args.profile:
        profile(step_fn, params, init_carry, batches[0], max_len, args)
        return
    if args.loops:
        lines = loops_table(step_fn, params, init_carry, batches, max_len, hidden, args)
        if args.out:
            with open(args.out, "w") as f:
                f.write(head + "\n\n" + "\n".join(lines) + "\n")
        return
    if args.sharded:
        lines = sharded_table(step_fn, params, init_carry, batches, max_len, args)
        if args.out:
            with open(args.out, "w") as f:
                f.write(head + "\n\n" + "\n".join(lines) + "\n")
        return
    torch_run = torch_decoder(hidden)
    cols = [
        "decoder",
        "batch",
        "rows",
        "compile s",
        "decode s",
        "tok/s",
        "(a) loop tok/s",
        "x loop",
        "(b) torch tok/s",
        "x torch",
        "(c) limit tok/s",
        "% of limit",
        "(d) step tok/s",
        "% of step",
        "peak MB",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    print(lines[0], flush=True)
    decode_s: dict[tuple[str, int], float] = {}
    limits: dict[int, float] = {}
    steps: dict[int, float] = {}
    for batch in batches:
        for name, (cfg, k, rule) in DECODERS.items():
            rows = batch * k
            if rows > args.max_rows:
                print(f"| {name} | {batch} | {rows} | skipped (--max-rows {args.max_rows}) |")
                continue
            carry = init_carry(batch)

            def run(cfg=cfg, carry=carry):
                return decode(step_fn, params, carry, cfg=cfg, max_len=max_len, num_samples=1,
                              key=0, vocab_size=VOCAB).tokens  # fmt: skip

            # the decoder, the bare-matmul limit and the bare step take turns, one call each per
            # round (best of the rounds), so a busy spell on a shared machine hits all alike
            first, warm, peak = timed(run, 0)
            limits.setdefault(rows, np.inf)
            steps.setdefault(rows, np.inf)
            for _ in range(args.repeats):
                limits[rows] = min(limits[rows], matmul_limit(rows, hidden, max_len, 1))
                steps[rows] = min(
                    steps[rows], model_step_time(step_fn, params, init_carry, rows, max_len, 1)
                )
                _, once, mem = timed(run, 1)
                warm, peak = min(warm, once), max(peak, mem)
            decode_s[(name, batch)] = warm
            tok_s = rows * max_len / warm
            loop_s = timed(
                lambda rows=rows, rule=rule, k=k: loop_decode(
                    step_fn, params, init_carry, rows, max_len, rule, k
                ),
                1,
            )[1]
            torch_s = np.nan
            if torch_run is not None and rule != "beam":
                torch_run(rows, 16, rule)  # warm-up and thread choice, untimed
                torch_s = timed(
                    lambda rows=rows, rule=rule: torch_run(rows, max_len, rule, pick=False), 1
                )[1]
            cells = [
                name,
                str(batch),
                str(rows),
                fmt(first, 2),
                fmt(warm, 3),
                fmt(tok_s),
                fmt(rows * max_len / loop_s),
                fmt(loop_s / warm, 1),
                fmt(rows * max_len / torch_s),
                fmt(torch_s / warm, 1),
                fmt(rows * max_len / limits[rows]),
                fmt(100 * limits[rows] / warm, 0),
                fmt(rows * max_len / steps[rows]),
                fmt(100 * steps[rows] / warm, 0),
                fmt(peak / 2**20, 1),
            ]
            line = "| " + " | ".join(cells) + " |"
            lines.append(line)
            print(line, flush=True)

    # beam with K beams at batch B versus sampling at batch B x K
    over = ["", "| beam | batch | beam s | sample s at batch x K | ratio |", "|---" * 5 + "|"]
    sample_cfg = DECODERS["sample top_p=0.9"][0]
    for (name, batch), warm in decode_s.items():
        k = DECODERS[name][1]
        if DECODERS[name][2] != "beam":
            continue
        ref = decode_s.get(("sample top_p=0.9", batch * k))
        if ref is None:
            if batch * k > args.max_rows:
                continue
            carry = init_carry(batch * k)
            ref = timed(
                lambda carry=carry: (
                    decode(
                        step_fn,
                        params,
                        carry,
                        cfg=sample_cfg,
                        max_len=max_len,
                        key=0,
                        vocab_size=VOCAB,
                    ).tokens
                ),
                args.repeats,
            )[1]
        over.append(f"| {name} | {batch} | {warm:.3f} | {ref:.3f} | {warm / ref:.2f} |")
    for line in over:
        print(line, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(head + "\n\n" + "\n".join(lines + over) + "\n")


if __name__ == "__main__":
    main()
