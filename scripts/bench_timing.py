"""What every mode of `bench_decode.py` shares: the benchmark model, the decoders, timing with
compile time and peak memory, the two hardware references (bare matmuls, bare step) and tables.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from types import SimpleNamespace as NS
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqgen.decoding import decode
from seqgen.tokens import BOS_ID, EOS_ID

VOCAB, EMBED, HIDDEN = 100, 128, 512

# name -> (decoder config, rows per batch row, rule of the hand-written references)
DECODERS = {
    "greedy": (NS(name="greedy"), 1, "greedy"),
    "sample top_p=0.9": (NS(name="sample", top_p=0.9), 1, "sample"),
    "beam K=4": (NS(name="beam", beam_size=4), 4, "beam"),
    "beam K=16": (NS(name="beam", beam_size=16), 16, "beam"),
}


def build(hidden: int, seed: int = 0) -> tuple[Callable, Any, Callable]:
    """seqgen's LSTM (random weights) as `(step_fn, params, init_carry)`, its EOS logit masked
    so that every row decodes exactly max_len tokens and the work is the same everywhere."""
    from flax import nnx

    from seqgen.models import LanguageModel, make_init_carry_fn, make_step_fn

    model = LanguageModel(
        VOCAB, cell="lstm", embed_size=EMBED, hidden_size=hidden, rngs=nnx.Rngs(seed)
    )
    step_fn, params = make_step_fn(model)

    def bench_step(params: Any, carry: Any, tokens: jax.Array) -> tuple[Any, jax.Array]:
        carry, logits = step_fn(params, carry, tokens)
        return carry, logits.at[:, EOS_ID].set(-1e9)  # no row stops early

    return bench_step, params, make_init_carry_fn(model)


def decoder_call(bench: Any, cfg: Any, batch: int, **kwargs: Any) -> Callable[[], jax.Array]:
    """One warm-callable decode of `batch` prompts (its tokens), `kwargs` to `decode`."""
    carry = bench.init_carry(batch)
    params = kwargs.pop("params", bench.params)
    return lambda: decode(
        bench.step_fn, params, carry, cfg=cfg, max_len=bench.max_len, key=0, vocab_size=VOCAB,
        **kwargs,
    ).tokens  # fmt: skip


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


# ----- the hardware references: (c) the bare matmuls, (d) the bare step -----


@partial(jax.jit, static_argnames=("max_len",))
def _matmuls(w_i, w_h, w_o, x, h, *, max_len):
    def body(carry, _):
        x, h = carry
        gates = x @ w_i + h @ w_h  # [R, 4H]
        h = gates[:, : h.shape[1]]
        logits = h @ w_o  # [R, V]
        return (x + logits[:, :1], h), None

    return jax.lax.scan(body, (x, h), None, length=max_len)[0]


def matmul_limit(bench: Any, rows: int) -> float:
    """(c) one warm call of the bare matrix products of `rows` decode steps (embedding
    projection, recurrent projection, output head) in a scan of max_len steps."""
    rng = np.random.default_rng(0)
    hidden = bench.hidden
    args = [
        jnp.asarray(rng.normal(size=s) * 0.01, jnp.float32)
        for s in [(EMBED, 4 * hidden), (hidden, 4 * hidden), (hidden, VOCAB)]
    ]
    x = jnp.ones((rows, EMBED), jnp.float32)
    h = jnp.ones((rows, hidden), jnp.float32)
    return timed(lambda: _matmuls(*args, x, h, max_len=bench.max_len), 1)[1]


@partial(jax.jit, static_argnames=("step_fn", "max_len"))
def _bare_steps(params, carry, tok, *, step_fn, max_len):
    def body(state, _):
        carry, tok = state
        carry, logits = step_fn(params, carry, tok)
        return (carry, jnp.argmax(logits, axis=-1).astype(tok.dtype)), None

    return jax.lax.scan(body, (carry, tok), None, length=max_len)[0][1]


def model_step_time(bench: Any, rows: int) -> float:
    """(d) one warm call of the model's own step in a bare scan, fed its argmax, nothing else
    (no scores, no EOS or prompt bookkeeping, no outputs but the last token)."""
    carry, tok = bench.init_carry(rows), jnp.full((rows,), BOS_ID, jnp.int32)
    run = lambda: _bare_steps(  # noqa: E731
        bench.params, carry, tok, step_fn=bench.step_fn, max_len=bench.max_len
    )
    return timed(run, 1)[1]


def round_robin(bench: Any, runs: list[Callable], rows: Iterable[int], repeats: int) -> tuple:
    """Best warm time of each run and, per row count, of the limit and the bare step, timed in
    turns (one call of each per round, `repeats` rounds), so that a busy spell on a shared
    machine hits every cell alike. Returns (best per run, limit per rows, step per rows, peak
    bytes per run)."""
    best, peak = [np.inf] * len(runs), [0] * len(runs)
    limits = {r: np.inf for r in rows}
    steps = dict(limits)
    for _ in range(repeats):
        for r in limits:
            limits[r] = min(limits[r], matmul_limit(bench, r))
            steps[r] = min(steps[r], model_step_time(bench, r))
        for i, run in enumerate(runs):
            _, once, mem = timed(run, 1)
            best[i], peak[i] = min(best[i], once), max(peak[i], mem)
    return best, limits, steps, peak


# ----- output -----


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


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:,.{digits}f}"


class Table:
    """A markdown table printed row by row as it is measured, kept for `--out`."""

    def __init__(self, columns: list[str]) -> None:
        self.lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        print(self.lines[0], flush=True)

    def row(self, cells: list[str]) -> None:
        self.lines.append("| " + " | ".join(cells) + " |")
        print(self.lines[-1], flush=True)
