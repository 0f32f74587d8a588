"""The decode loop, written once: a step over the `max_len` positions that stops changing
anything once every row of the batch has ended.

Every scan decoder (greedy, sample, beam, diverse beam, stochastic beam) is

    state, ys = run_loop(step, state, xs, finished=..., idle=..., loop=...)

with `step(state, x) -> (state, y)` one position, `finished(state)` a scalar bool (every row
has ended: the remaining steps would change nothing) and `idle` the per-step output `y` of a
step taken after that. The variants, all with the same outputs bit for bit (test_decoding):

    scan         `lax.scan` over the positions; a step after `finished` is skipped (`lax.cond`)
    scan_unroll  the same with `unroll=UNROLL` steps per loop iteration
    masked       `lax.scan` without `lax.cond`: every step runs, and a finished batch's new state
                 (but its `carry`, which only later steps read) and output are replaced by the
                 old state and `idle` (`jnp.where`), so the loop body has no branch (no per-step
                 device-to-host test on an accelerator)
    while        `lax.while_loop` that stops at the first position where every row has ended;
                 the outputs are written into [T, ...] buffers filled with `idle`

`auto` picks per `jax.default_backend()` from AUTO_LOOP, chosen by measurement
(`scripts/bench_decode.py --loops`, numbers in README's benchmark section).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from seqgen.errors import UserError

LOOPS = ("auto", "scan", "scan_unroll", "masked", "while")
UNROLL = 4  # steps per loop iteration of `scan_unroll`
# backend -> loop, by measurement (README, "Benchmarks"); a backend not listed gets `scan`
AUTO_LOOP = {"cpu": "scan", "gpu": "scan", "tpu": "scan"}


def resolve_loop(loop: str) -> str:
    """The concrete loop of `loop` (`auto`: AUTO_LOOP of the default backend); UserError if
    unknown."""
    if loop not in LOOPS:
        raise UserError(f"decode.loop={loop!r} is unknown; allowed: {', '.join(LOOPS)}")
    if loop == "auto":
        return AUTO_LOOP.get(jax.default_backend(), "scan")
    return loop


def run_loop(
    step: Callable[[Any, Any], tuple[Any, Any]],
    state: Any,
    xs: Any,
    *,
    finished: Callable[[Any], jax.Array],
    idle: Any,
    loop: str,
) -> tuple[Any, Any]:
    """Run `step` over `xs` (every leaf [T, ...]) from `state`: (final state, ys [T, ...]).

    `state` is a `flax.struct` dataclass with a field `carry` (the step function's carry).

    From the first position where `finished(state)` holds, `state` stays as it is and each
    position's output is `idle` (same structure, shapes and dtypes as `step`'s output, without
    the T axis). `loop` is one of LOOPS other than `auto` (see the module docstring).
    """

    def skip(state: Any, x: Any) -> tuple[Any, Any]:
        del x
        return state, idle

    def guarded(state: Any, x: Any) -> tuple[Any, Any]:
        return jax.lax.cond(finished(state), skip, step, state, x)

    if loop == "scan":
        return jax.lax.scan(guarded, state, xs)
    if loop == "scan_unroll":
        return jax.lax.scan(guarded, state, xs, unroll=UNROLL)
    if loop == "masked":

        def masked(state: Any, x: Any) -> tuple[Any, Any]:
            stop = finished(state)
            new, y = step(state, x)
            keep = lambda old, fresh: jnp.where(stop, old, fresh)  # noqa: E731
            # the step function's carry is read only by later steps, whose outputs are all
            # `idle` once `stop` holds, so it is left unmasked: a select on it changes how XLA
            # fuses the step function's arithmetic, and with it the log-probs' last bits
            kept = jax.tree.map(keep, state.replace(carry=None), new.replace(carry=None))
            return kept.replace(carry=new.carry), jax.tree.map(keep, idle, y)

        return jax.lax.scan(masked, state, xs)
    if loop == "while":
        n = jax.tree.leaves(xs)[0].shape[0]
        buffers = jax.tree.map(lambda y: jnp.broadcast_to(y, (n, *jnp.shape(y))), idle)

        def body(c: tuple) -> tuple:
            t, state, ys = c
            state, y = step(state, jax.tree.map(lambda x: x[t], xs))
            put = lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, t, 0)  # noqa: E731
            return t + 1, state, jax.tree.map(put, ys, y)

        def more(c: tuple) -> jax.Array:
            t, state, _ = c
            return (t < n) & ~finished(state)

        _, state, ys = jax.lax.while_loop(more, body, (jnp.int32(0), state, buffers))
        return state, ys
    raise ValueError(f"loop={loop!r}; expected one of {LOOPS[1:]}")
