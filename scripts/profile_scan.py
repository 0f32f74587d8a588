"""Per-step cost of XLA:CPU's scan at the default model's sizes: where a small LSTM's time goes.

    python scripts/profile_scan.py [--hidden 128] [--batch 32] [--steps 256] [--rounds 5]

Times, in microseconds per scan step on one thread (interleaved round-robin, median): an empty
scan step (the loop's own cost), one LSTM step (a [B, H] x [H, 4H] dot and the gates) and its
autodiff forward + backward (also with the [H, 4H] dot split into four [H, H] dots, one per
gate), two layers' steps as two dots or as one batched dot over layers
(how `seqgen.models.wavefront` computes all layers in one step). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def _gates(c, y):
    i, f, g, o = jnp.split(y, 4, -1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return c, jax.nn.sigmoid(o) * jnp.tanh(c)


def programs(batch: int, hidden: int) -> dict:
    def empty(w, xs):
        return jax.lax.scan(lambda c, x: (c + x[:, :hidden], c), jnp.zeros((batch, hidden)), xs)

    def one(w, xs, split=False):
        def body(carry, x):
            h = carry[1]
            gates = jnp.split(w[0], 4, -1) if split else [w[0]]  # four [H, H] dots or one
            hw = jnp.concatenate([h @ wg for wg in gates], -1)
            c, h = _gates(carry[0], x + hw)
            return (c, h), h

        z = jnp.zeros((batch, hidden))
        return jax.lax.scan(body, (z, z), xs)[1].sum()

    def two(w, xs, batched):
        def body(carry, x):
            c, h = carry
            hw = h @ w if batched else jnp.stack([h[0] @ w[0], h[1] @ w[1]])
            c, h = _gates(c, x[None] + hw)
            return (c, h), h[1]

        z = jnp.zeros((2, batch, hidden))
        return jax.lax.scan(body, (z, z), xs)[1].sum()

    return {
        "empty step": jax.jit(lambda w, xs: empty(w, xs)[1].sum()),
        "1 layer": jax.jit(one),
        "1 layer fwd+bwd": jax.jit(jax.grad(one)),
        "1 layer fwd+bwd, 4 dots": jax.jit(jax.grad(lambda w, xs: one(w, xs, split=True))),
        "2 layers, 2 dots": jax.jit(lambda w, xs: two(w, xs, False)),
        "2 layers, batched dot": jax.jit(lambda w, xs: two(w, xs, True)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    key = jax.random.key(0)
    w = 0.05 * jax.random.normal(key, (2, args.hidden, 4 * args.hidden))
    xs = jax.random.normal(key, (args.steps, args.batch, 4 * args.hidden))
    fns = programs(args.batch, args.hidden)
    for fn in fns.values():
        jax.block_until_ready(fn(w, xs))
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[n](w, xs))
            times[n].append((time.perf_counter() - t0) / args.steps * 1e6)
    print(f"load average {os.getloadavg()[0]:.1f}; B {args.batch}, H {args.hidden}, one thread")
    for n, v in times.items():
        print(f"{n:24s} {statistics.median(v):8.1f} us/step")


if __name__ == "__main__":
    main()
