"""One layer's recurrence over time, with a hand-written backward pass (`jax.custom_vjp`).

`scan_layer(recur, cell_type, cell, carry0, xs, backward)` runs `recur` (a recurrence of
`seqgen.models.lm`: one cell step with the input projection split off) over xs [T, B, G*H] and
returns the hidden states [T, B, H]. Its forward pass is always the same `lax.scan` of `recur`;
`backward` says how gradients are taken:

- ``"autodiff"``: JAX differentiates the scan (the reference). Its backward loop accumulates
  the recurrent weights' gradient inside the loop, one small matmul per time step.
- ``"fused"``: the cuDNN-style backward (Appleyard et al., 2016, "Optimizing performance of
  recurrent neural networks on GPUs"). The forward scan also outputs each step's recurrent
  pre-activation; the gate derivatives are computed from it after the loop for all steps at
  once, the backward scan propagates only dh (and dc) and emits the pre-activation gate
  gradients, and the recurrent weights' gradient is one [H, T*B] x [T*B, G*H] matmul after
  the loop. Its loop bodies are half the size of autodiff's. On the quiet 2-core CPU
  (XLA:CPU, jax 0.10.2) it is the fastest seqgen variant in 5 of 6 rows (1.06-1.29x
  autodiff; level on the default model at two threads; README, "Training"), so it is the
  default (`train.backward`); "autodiff" is the reference it is tested against.
  `train.backward=wavefront` runs all layers in one scan instead (`models.wavefront`).

Both compute the same gradients up to float32 rounding (summation order);
`tests/test_recurrence.py` checks loss and every gradient against autodiff for all cells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from seqgen.models.wavefront import WAVEFRONTS

Array = jax.Array
BACKWARDS = ("fused", "autodiff", *WAVEFRONTS)  # train.backward: see also models.wavefront


def scan_layer(
    recur: Callable[..., Any], cell_type: str, cell: Any, carry0: Any, xs: Array, backward: str
) -> Array:
    """Hidden states [T, B, H] of `recur(cell, carry, x)` over xs [T, B, G*H] from `carry0`."""
    if backward == "autodiff":
        _, hs = jax.lax.scan(lambda carry, x: recur(cell, carry, x), carry0, xs)
        return hs
    if backward != "fused":
        raise ValueError(f"backward={backward!r}; allowed: fused, autodiff")
    weights = tuple(w[...] for w in _WEIGHTS[cell_type](cell))
    return _fused(recur, cell_type, weights, carry0, xs)


def _lstm_weights(cell: Any) -> tuple:
    return cell.dense_h.kernel, cell.dense_h.bias


def _h_kernel(cell: Any) -> tuple:
    return (cell.dense_h.kernel,)


_WEIGHTS: dict[str, Callable[[Any], tuple]] = {
    "rnn": _h_kernel,
    "lstm": _lstm_weights,
    "gru": _h_kernel,
}


class _Cell:
    """A stand-in cell for `recur`: `dense_h.kernel[...]` / `.bias[...]` are plain arrays."""

    class _Dense:
        def __init__(self, kernel: Array, bias: Array | None):
            self.kernel, self.bias = kernel, bias

    def __init__(self, weights: tuple):
        self.dense_h = self._Dense(weights[0], weights[1] if len(weights) > 1 else None)


def _forward(recur, weights, carry0, xs, pre=None):
    """The reference forward scan; outputs every step's carry and, with `pre`, the recurrent
    pre-activation `recur` computes (the same expression, so XLA computes it once)."""
    cell = _Cell(weights)

    def body(carry, x):
        new, _ = recur(cell, carry, x)
        return new, (new, None if pre is None else pre(weights, carry, x))

    _, outs = jax.lax.scan(body, carry0, xs)
    return outs


def _lstm_pre(weights: tuple, carry: tuple, x: Array) -> Array:
    return x + carry[1] @ weights[0] + weights[1]  # `lm._lstm_gates`'s y, gates before activation


def _gru_pre(weights: tuple, carry: Array, x: Array) -> Array:
    return carry @ weights[0]  # `lm._gru_gates`'s [hr, hz, hn]


_PRE: dict[str, Callable[..., Array] | None] = {"rnn": None, "lstm": _lstm_pre, "gru": _gru_pre}


def _hidden(cell_type: str, carries: Any) -> Array:
    return carries[1] if cell_type == "lstm" else carries


def _fused_impl(recur, cell_type, weights, carry0, xs):
    return _hidden(cell_type, _forward(recur, weights, carry0, xs)[0])


_fused = jax.custom_vjp(_fused_impl, nondiff_argnums=(0, 1))


def _fused_fwd(recur, cell_type, weights, carry0, xs):
    carries, pre = _forward(recur, weights, carry0, xs, _PRE[cell_type])
    return _hidden(cell_type, carries), (weights, carry0, xs, carries, pre)


def _shifted(first: Array, seq: Array) -> Array:
    """[first, seq[0], ..., seq[T-2]]: the value before each step."""
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


def _fused_bwd(recur, cell_type, res, dhs):
    return _BACKWARD[cell_type](*res, dhs)


_fused.defvjp(_fused_fwd, _fused_bwd)


def _reverse_scan(step: Callable, carry: Any, xs: Any) -> tuple[Any, Array]:
    return jax.lax.scan(step, carry, xs, reverse=True)


def _weight_grad(h_prev: Array, dgates: Array) -> Array:
    """sum over t, b of h_prev[t, b, :]^T dgates[t, b, :]: one matmul after the loop."""
    return h_prev.reshape(-1, h_prev.shape[-1]).T @ dgates.reshape(-1, dgates.shape[-1])


def _lstm_bwd(weights, carry0, xs, carries, y, dhs):
    """Gradients of `lm._lstm_gates` (y = x + h W + b; c' = s(f) c + s(i) tanh(g);
    h' = s(o) tanh(c')) with respect to (W, b), carry0 = (c0, h0) and xs."""
    kernel = weights[0]
    cs, hs = carries
    c_prev, h_prev = _shifted(carry0[0], cs), _shifted(carry0[1], hs)
    i, f, g, o = jnp.split(y, 4, axis=-1)
    si, sf, tg, so = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    tc = jnp.tanh(cs)
    # dy = [dc, dc, dc, dh] * factors, dc += dh * dc_dh: the loop keeps only what recurs
    factors = jnp.concatenate(
        [tg * si * (1 - si), c_prev * sf * (1 - sf), si * (1 - tg * tg), tc * so * (1 - so)], -1
    )
    dc_dh = so * (1 - tc * tc)
    kernel_t = kernel.T

    def step(carry, inp):
        dc, dh = carry
        dh_out, fac, dcdh, forget = inp
        dh = dh + dh_out
        dc = dc + dh * dcdh
        dy = jnp.concatenate([dc, dc, dc, dh], -1) * fac
        return (dc * forget, dy @ kernel_t), dy

    zeros = jnp.zeros_like(carry0[1])
    (dc0, dh0), dy = _reverse_scan(step, (zeros, zeros), (dhs, factors, dc_dh, sf))
    dweights = (_weight_grad(h_prev, dy), jnp.sum(dy, axis=(0, 1)))
    return dweights, (dc0, dh0), dy


def _gru_bwd(weights, carry0, xs, carries, hw, dhs):
    """Gradients of `lm._gru_gates` ([hr, hz, hn] = h W; r = s(xr + hr), z = s(xz + hz),
    n = tanh(xn + r hn), h' = (1 - z) n + z h) with respect to W, h0 and xs."""
    (kernel,) = weights
    hs = carries
    h_prev = _shifted(carry0, hs)
    xr, xz, xn = jnp.split(xs, 3, axis=-1)
    hr, hz, hn = jnp.split(hw, 3, axis=-1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    dn_dh = (1 - z) * (1 - n * n)  # d(pre-activation of n) / dh'
    dz_dh = (h_prev - n) * z * (1 - z)
    dr_dh = dn_dh * hn * r * (1 - r)
    # per step: da = dh * [dr_dh, dz_dh, dn_dh] (input side), dh W^T uses [.., .., da_n * r]
    factors = jnp.concatenate([dr_dh, dz_dh, dn_dh], -1)
    kernel_t = kernel.T

    def step(dh, inp):
        dh_out, fac, r_t, z_t = inp
        dh = dh + dh_out
        dx = jnp.concatenate([dh, dh, dh], -1) * fac
        dr, dz, dn = jnp.split(dx, 3, axis=-1)
        dhw = jnp.concatenate([dr, dz, dn * r_t], -1)
        return dh * z_t + dhw @ kernel_t, (dx, dhw)

    dh0, (dxs, dhw) = _reverse_scan(step, jnp.zeros_like(carry0), (dhs, factors, r, z))
    return (_weight_grad(h_prev, dhw),), dh0, dxs


def _rnn_bwd(weights, carry0, xs, carries, _, dhs):
    """Gradients of `lm._rnn_gates` (h' = tanh(x + h W)) with respect to W, h0 and xs."""
    (kernel,) = weights
    hs = carries
    kernel_t = kernel.T

    def step(dh, inp):
        dh_out, h = inp
        da = (dh + dh_out) * (1 - h * h)
        return da @ kernel_t, da

    dh0, das = _reverse_scan(step, jnp.zeros_like(carry0), (dhs, hs))
    return (_weight_grad(_shifted(carry0, hs), das),), dh0, das


_BACKWARD: dict[str, Callable[..., tuple]] = {
    "rnn": _rnn_bwd,
    "lstm": _lstm_bwd,
    "gru": _gru_bwd,
}
