"""Teacher-forced scoring: the per-token log-probs of given sequences under a model's step
function (the human row, and generations under a reference model for `gen/ref_ppl`).

`LoadedModel` is a model as the decoders and scorers see it: a pure step function
`step_fn(params, carry, tokens [B]) -> (carry, logits [B, V])`, its parameters and a carry
factory. Nothing here knows which network (or oracle) is behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqgen.tokens import BOS_ID, EOS_ID


@dataclass
class LoadedModel:
    """A model as the decoders and scorers see it: a pure step function and its parameters."""

    step_fn: Callable[..., Any]
    params: Any
    init_carry: Callable[..., Any]  # (batch size, steps it will take) -> carry pytree
    vocab_size: int
    metrics: dict[str, float] = field(default_factory=dict)  # ppl/valid, ppl/test, bits/*
    info: dict[str, Any] = field(default_factory=dict)  # cache key, params, train summary


def score_sequences(
    model: LoadedModel, prompts: list[np.ndarray], conts: list[np.ndarray], ended: list[bool]
) -> tuple[list[np.ndarray], list[float]]:
    """Log-probs of each continuation token (after BOS and its prompt), and of EOS after it
    where it `ended` (0.0 where it did not: a continuation cut at the budget has no EOS)."""
    n = len(conts)
    if n == 0:
        return [], []
    inputs, targets = _teacher_inputs(prompts, conts)
    lp = np.asarray(
        _score_jit(
            model.step_fn,
            model.params,
            model.init_carry(n, inputs.shape[1]),  # a KV cache holds every step
            jnp.asarray(inputs),
            jnp.asarray(targets),
        )
    )
    cont_lps, eos_lps = [], []
    for i, (p, c) in enumerate(zip(prompts, conts)):
        cont_lps.append(lp[i, len(p) : len(p) + len(c)])
        eos_lps.append(float(lp[i, len(p) + len(c)]) if ended[i] else 0.0)
    return cont_lps, eos_lps


@jax.jit(static_argnums=0)
def _score_jit(step_fn, params, carry, inputs, targets):  # [N, T] -> [N, T]
    def body(carry, xs):
        tok, tgt = xs
        carry, logits = step_fn(params, carry, tok)
        logp = jax.nn.log_softmax(logits.astype(np.float32), axis=-1)
        return carry, jnp.take_along_axis(logp, tgt[:, None], axis=-1)[:, 0]

    _, lp = jax.lax.scan(body, carry, (inputs.T, targets.T))
    return lp.T


def _teacher_inputs(
    prompts: list[np.ndarray], conts: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """int32 [N, T] inputs (BOS, prompt, continuation, PAD) and targets (prompt,
    continuation, EOS, PAD): position k's logits predict targets[k]."""
    full = [np.concatenate([p, c]).astype(np.int32) for p, c in zip(prompts, conts)]
    t = max(len(f) for f in full) + 1
    inputs = np.zeros((len(full), t), np.int32)
    targets = np.zeros((len(full), t), np.int32)
    for i, f in enumerate(full):
        inputs[i, 0] = BOS_ID
        inputs[i, 1 : len(f) + 1] = f
        targets[i, : len(f)] = f
        targets[i, len(f)] = EOS_ID
    return inputs, targets


def step_logits(
    model: LoadedModel, prompts: list[np.ndarray], conts: list[np.ndarray], ended: list[bool]
) -> list[np.ndarray]:
    """float32 [len(c) + ended, V] per continuation c: the model's raw logits at each step that
    chose a continuation token (the last one EOS where it ended), teacher-forced with the same
    step function and parameters as the decoders (`oracle/trunc_*` rerun the sampler's
    processors on them)."""
    if not conts:
        return []
    inputs, _ = _teacher_inputs(prompts, conts)
    logits = np.asarray(
        _logits_jit(model.step_fn, model.params, model.init_carry(len(conts)), inputs)
    )
    return [
        logits[i, len(p) : len(p) + len(c) + int(e)]
        for i, (p, c, e) in enumerate(zip(prompts, conts, ended))
    ]


@jax.jit(static_argnums=0)
def _logits_jit(step_fn, params, carry, inputs):  # [N, T] -> [N, T, V]
    def body(carry, tok):
        carry, logits = step_fn(params, carry, tok)
        return carry, logits.astype(np.float32)

    _, out = jax.lax.scan(body, carry, inputs.T)
    return jnp.swapaxes(out, 0, 1)
