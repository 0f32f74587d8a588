"""All layers of a recurrent stack in one scan: a wavefront, with a hand-written backward.

The per-layer path (`models.recurrence.scan_layer`) runs one `lax.scan` per layer; on a CPU each
scan step of a small model costs more in XLA's loop machinery (the while loop, dynamic slices,
one small kernel per op) than in arithmetic. Here scan step s runs layer l at time s - l
(Appleyard et al., 2016, "Optimizing performance of recurrent neural networks on GPUs", the
layers' wavefront), so every layer's step reads only the carry of the step before: layer l's
input is layer l-1's hidden state at time s - l, which step s - 1 computed. One scan of
T + L - 1 steps then does all layers, each step with one batched matmul for the recurrent
weights of all layers ([L, B, H] x [L, H, G]), one for the input weights of the layers above
the first ([L-1, B, H] x [L-1, H, G], the hoisted projection of layer 0 comes in as xs), and the
gate arithmetic of all layers as one [L, B, G] expression. Layer l is idle in the first l steps
(its carry stays the initial one) and computes unused values in the last L-1-l.

`backward` (`train.backward`):
- ``"wavefront"``: JAX differentiates the wavefront scan;
- ``"wavefront_fused"``: a `jax.custom_vjp` whose backward is the reverse wavefront: each step
  differentiates the gates (`jax.vjp` of the cell's gate function, the same code as the
  forward) and propagates dh (and dc) through the two batched matmuls; the weights' gradients
  are batched matmuls over all steps after the loop, as in `models.recurrence`'s "fused".

The forward computes the same function as the per-layer path up to float32 rounding;
`tests/test_recurrence.py` checks loss and every gradient of both against per-layer autodiff.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
WAVEFRONTS = ("wavefront", "wavefront_fused")
PER_LAYER = {"wavefront": "autodiff", "wavefront_fused": "fused"}  # where one scan cannot serve


class Stack(NamedTuple):
    """The recurrent stack's weights, stacked over layers (G = gates x H)."""

    wh: Array  # [L, H, G] dense_h kernels
    bh: Array | None  # [L, 1, G] dense_h biases (LSTM), added to h W_h by the gates
    wi: Array  # [L-1, H, G] dense_i kernels of the layers above the first
    bi: Array | None  # [L-1, 1, G] their dense_i biases (GRU, RNN)


def _stacked(arrays: list, lead: int) -> Array | None:
    if not arrays or arrays[0] is None:
        return None
    out = jnp.stack(arrays)
    return out[:, None, :] if lead else out


def stack_weights(cells: Sequence[Any]) -> Stack:
    """`Stack` of a list of NNX cells (`dense_h`, `dense_i` Linear layers)."""
    bias = lambda dense: None if dense.bias is None else dense.bias[...]
    return Stack(
        jnp.stack([c.dense_h.kernel[...] for c in cells]),
        _stacked([bias(c.dense_h) for c in cells], 1),
        jnp.stack([c.dense_i.kernel[...] for c in cells[1:]])
        if len(cells) > 1
        else jnp.zeros((0, *cells[0].dense_h.kernel.shape)),
        _stacked([bias(c.dense_i) for c in cells[1:]], 1),
    )


def _hidden(carry: Any) -> Array:
    return carry[1] if isinstance(carry, tuple) else carry


def wavefront(
    gates: Callable[..., Any], w: Stack, carry0: Any, xs: Array, keep: Array | None, backward: str
) -> Array:
    """Top layer's hidden states [T, B, H] of the stack over layer 0's input projections
    xs [T, B, G], from carry0 (leaves [L, B, H]); keep [L-1, T, B, H]: the dropout masks of the
    layers' inputs above the first (None: no dropout). `gates(carry, x_proj, hw, bias)` is
    one cell step with its matmuls split off (`models.lm._GATES`)."""
    if backward not in WAVEFRONTS:
        raise ValueError(f"backward={backward!r}; allowed: {', '.join(WAVEFRONTS)}")
    layers = w.wh.shape[0]
    xs = jnp.pad(xs, ((0, layers - 1), (0, 0), (0, 0)))  # [S, B, G], S = T + L - 1
    if keep is not None:  # layer l reads keep[l-1] at time s - l: shift it by l steps
        keep = jnp.stack(
            [
                jnp.pad(keep[i], ((i + 1, layers - 2 - i), (0, 0), (0, 0)))
                for i in range(layers - 1)
            ],
            axis=1,
        )  # [S, L-1, B, H]
    scan = _fused if backward == "wavefront_fused" else _forward_tops
    return scan(gates, w, carry0, xs, keep)[layers - 1 :]


def _pre(w: Stack, h: Array, x0: Array, keep: Array | None) -> tuple[Array, Array]:
    """Every layer's input projection x [L, B, G] (layer 0's is x0) and h W_h [L, B, G]."""
    hw = _per_layer(h, w.wh)
    if w.wi.shape[0] == 0:
        return x0[None], hw
    below = h[:-1] if keep is None else h[:-1] * keep
    up = _per_layer(below, w.wi)
    if w.bi is not None:
        up = up + w.bi
    return jnp.concatenate([x0[None], up]), hw


def _per_layer(a: Array, w: Array) -> Array:
    """a [L, B, K] x w [L, K, N] -> [L, B, N]: one dot per layer. One batched dot over layers
    (`a @ w`) measured no faster for wavefront_fused's forward + backward on the quiet machine
    (default model: 27,582 vs 28,352 tok/s at one thread, 28,663 vs 29,430 at two; +12-14% only
    under load 4-5), though two layers' bare steps run 215 vs 237 us batched (README,
    "Training")."""
    return jnp.stack([a[i] @ w[i] for i in range(w.shape[0])])


def _valid(steps: int, layers: int) -> Array:
    """[S, L, 1, 1]: layer l has started by step s (s >= l); before, its carry stays put."""
    return (jnp.arange(steps)[:, None] >= jnp.arange(layers)[None, :])[..., None, None]


def _forward(gates, w, carry0, xs, keep):
    """The wavefront scan; per step: the top layer's new h, the carry before the step and the
    pre-activations (x, hw), the backward's residuals."""

    def body(carry, inp):
        x0, keep_s, valid = inp
        x, hw = _pre(w, _hidden(carry), x0, keep_s)
        new, _ = gates(carry, x, hw, w.bh)
        new = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, carry)
        return new, (_hidden(new)[-1], (carry, x, hw))

    valid = _valid(xs.shape[0], w.wh.shape[0])
    return jax.lax.scan(body, carry0, (xs, keep, valid))[1]


def _forward_tops(gates, w, carry0, xs, keep):
    return _forward(gates, w, carry0, xs, keep)[0]


_fused = jax.custom_vjp(_forward_tops, nondiff_argnums=(0,))


def _fused_fwd(gates, w, carry0, xs, keep):
    tops, res = _forward(gates, w, carry0, xs, keep)
    return tops, (w, keep, *res)


def _fused_bwd(gates, res, dtops):
    w, keep, prevs, x_all, hw_all = res
    layers = w.wh.shape[0]
    wh_t, wi_t = jnp.swapaxes(w.wh, 1, 2), jnp.swapaxes(w.wi, 1, 2)
    top = jnp.arange(layers)[:, None, None] == layers - 1  # [L, 1, 1]

    def body(d, inp):
        dtop, keep_s, valid, prev, x, hw = inp
        d = _with_hidden(d, _hidden(d) + jnp.where(top, dtop, 0.0))
        d_new = jax.tree.map(lambda a: jnp.where(valid, a, 0.0), d)
        d_idle = jax.tree.map(lambda a: jnp.where(valid, 0.0, a), d)
        _, vjp = jax.vjp(lambda c, x_, hw_: gates(c, x_, hw_, w.bh)[0], prev, x, hw)
        dprev, dx, dhw = vjp(d_new)
        dh = _per_layer(dhw, wh_t)  # [L, B, H]
        if layers > 1:
            below = _per_layer(dx[1:], wi_t)  # into the layer below's h at the step before
            below = below if keep_s is None else below * keep_s
            dh = dh + jnp.concatenate([below, jnp.zeros_like(dh[:1])])
        dprev = jax.tree.map(jnp.add, dprev, d_idle)
        return _with_hidden(dprev, _hidden(dprev) + dh), (dx, dhw)

    valid = _valid(dtops.shape[0], layers)
    zeros = jax.tree.map(jnp.zeros_like, prevs)
    d0 = jax.tree.map(lambda z: z[0], zeros)
    dcarry0, (dx, dhw) = jax.lax.scan(
        body, d0, (dtops, keep, valid, prevs, x_all, hw_all), reverse=True
    )
    return _weight_grads(w, keep, _hidden(prevs), dx, dhw), dcarry0, dx[:, 0], _zeros(keep)


def _with_hidden(carry: Any, h: Array) -> Any:
    return (carry[0], h) if isinstance(carry, tuple) else h


def _sum_outer(a: Array, b: Array) -> Array:
    """sum over s, b of a[s, l, b, :]^T b[s, l, b, :] -> [L, K, N], one [K, S*B] x [S*B, N] dot
    per layer."""
    if b.shape[1] == 0:
        return jnp.zeros((0, a.shape[-1], b.shape[-1]), b.dtype)
    flat = lambda x, i: x[:, i].reshape(-1, x.shape[-1])
    return jnp.stack([flat(a, i).T @ flat(b, i) for i in range(b.shape[1])]).reshape(
        b.shape[1], a.shape[-1], b.shape[-1]
    )


def _zeros(keep: Array | None) -> Array | None:
    return None if keep is None else jnp.zeros_like(keep)  # masks are constants


def _weight_grads(w: Stack, keep, h_prev: Array, dx: Array, dhw: Array) -> Stack:
    """Sums over steps and rows of input^T x gate gradient: batched matmuls after the loop.
    h_prev [S, L, B, H]; dx, dhw [S, L, B, G]. The gates add `bh` to hw, so its gradient is
    dhw's sum."""
    sum_rows = lambda a: jnp.sum(a, axis=(0, 2))[:, None, :]
    dwh = _sum_outer(h_prev, dhw)
    below = h_prev[:, :-1] if keep is None else h_prev[:, :-1] * keep
    dwi = _sum_outer(below, dx[:, 1:])
    return Stack(
        dwh,
        None if w.bh is None else sum_rows(dhw),
        dwi,
        None if w.bi is None else sum_rows(dx[:, 1:]),
    )


_fused.defvjp(_fused_fwd, _fused_bwd)
