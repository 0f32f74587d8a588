"""Classifier-free guidance for any step function: a step-function combinator.

Sanchez et al. 2023, "Stay on topic with Classifier-Free Guidance" (arXiv:2306.17806, ICML 2024):
the paper's CFG formula for autoregressive language models, as
Hugging Face's `UnbatchedClassifierFreeGuidanceLogitsProcessor` (`guidance_scale`) computes it,
in log-softmax space:

    log P^(w_t | w_<t, c) = log P(w_t | w_<t) + gamma * (log P(w_t | w_<t, c) - log P(w_t | w_<t))

with both terms `log_softmax` of the model's logits: the conditional stream reads the prompt
c, the unconditional one reads the unconditional context instead (the prompt without the
conditioning: for folk tunes the prompt without its M:/L:/K: header lines, for text and
DPFSA strings nothing but BOS; `prompts.unconditional_contexts`). gamma = `decoder.guidance_scale`:
1 is the conditional model (the knob's neutral value: guidance off), 0 the unconditional
one, gamma > 1 pushes the distribution towards what the context makes more likely.

`guide(req, prep)` wraps a request (`registry.run` calls it for the decoders whose row says
`guidance=True`): the step function becomes `guided_step(step_fn)`, whose carry is a
`GuidedCarry` of both streams, and the parameters `(params, gamma)` (gamma traced: sweeping it
reuses the compiled program). Both streams advance in the decoder's own scan, one step call
each per position, so every decoder that takes a step function runs it unchanged, beams
included (the carry's leaves all have the row axis first, so beam gathers reorder both).

Alignment: position i of the scan feeds the conditional stream x_i (BOS, the prompt's p tokens,
then the generated ones). The unconditional stream, with a context of m <= p tokens, waits for
the first p - m calls (its carry unchanged), then reads BOS and its m tokens, so it has read its
whole context exactly when the conditional one has read the prompt; from there both read the
same generated tokens. Before that the guided logits would mix in a stale stream, so the
prompt positions (forced anyway) keep the conditional logits: `prompt_logprobs` stay the model's.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from seqgen.decoding.common import DecodeRequest, Prepared, StepFn, get
from seqgen.decoding.knobs import KNOBS
from seqgen.errors import UserError
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID

KNOB = "guidance_scale"


@struct.dataclass
class GuidedCarry:
    """Both streams' carries and where the unconditional one stands; every leaf [B, ...]."""

    cond: Any  # the model's carry, conditional stream
    uncond: Any  # the model's carry, unconditional stream
    context: jax.Array  # [B, U] int32 the unconditional context, PAD after it
    length: jax.Array  # [B] int32 m, its length
    wait: jax.Array  # [B] int32 p - m: calls before the unconditional stream reads BOS
    calls: jax.Array  # [B] int32 step calls so far


def on(cfg: Any) -> bool:
    """Guidance is on when `decoder.guidance_scale` is away from its neutral value (1)."""
    return float(get(cfg, KNOB)) != KNOBS[KNOB].neutral


def combine(cond: jax.Array, uncond: jax.Array, gamma: jax.Array) -> jax.Array:
    """Sanchez et al. 2023: log_softmax(uncond) + gamma * (log_softmax(cond) -
    log_softmax(uncond)), row by row. cond, uncond [R, V] logits; gamma a scalar."""
    c = jax.nn.log_softmax(cond.astype(jnp.float32), axis=-1)
    u = jax.nn.log_softmax(uncond.astype(jnp.float32), axis=-1)
    return u + gamma * (c - u)


def _rows(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per row, `new` where mask [B] else `old` (any carry pytree)."""
    return jax.tree.map(
        lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
    )


@functools.cache
def guided_step(step_fn: StepFn) -> StepFn:
    """The guided step function of `step_fn` (one object per `step_fn`, so the decoders'
    compiled programs are reused): `(params, gamma), GuidedCarry, tokens[B]` -> `(carry,
    logits[B, V])`, the logits `combine`d once the unconditional stream has read its context
    and the conditional ones before (and wherever gamma == 1, so guidance_scale=1 is the
    unguided decode bit for bit)."""

    def step(params: tuple[Any, jax.Array], carry: GuidedCarry, tokens: jax.Array):
        inner, gamma = params
        cond_carry, cond = step_fn(inner, carry.cond, tokens)  # [B, V]
        j = carry.calls - carry.wait  # [B] the unconditional stream's position; < 0: waiting
        idx = jnp.clip(j - 1, 0, carry.context.shape[1] - 1)[:, None]
        ctx_tok = jnp.take_along_axis(carry.context, idx, axis=1)[:, 0]  # [B]
        read = jnp.where(j == 0, BOS_ID, jnp.where(j <= carry.length, ctx_tok, tokens))
        uncond_carry, uncond = step_fn(inner, carry.uncond, read.astype(tokens.dtype))
        guided = combine(cond, uncond, gamma)
        use = (j >= carry.length) & (gamma != 1.0)  # [B]
        logits = jnp.where(use[:, None], guided, cond.astype(jnp.float32))
        new = carry.replace(
            cond=cond_carry,
            uncond=_rows(j >= 0, uncond_carry, carry.uncond),
            calls=carry.calls + 1,
        )
        return new, logits

    return step


def _contexts(req: DecodeRequest, prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The unconditional contexts [B, U] (PAD after each) and their lengths [B], checked
    against the prompts: None means none (BOS only, the text case); one `UserError` line."""
    batch, plen = prep.batch, np.asarray(prep.prompt_lengths)
    if req.guidance_prompts is None:
        return np.full((batch, 1), PAD_ID, np.int32), np.zeros((batch,), np.int32)
    ctx = np.asarray(req.guidance_prompts)
    if ctx.ndim != 2 or ctx.shape[0] != batch or not np.issubdtype(ctx.dtype, np.integer):
        raise UserError(
            f"guidance_prompts has shape {ctx.shape}; allowed: int[{batch}, U] (one per prompt)"
        )
    lengths = np.full((batch,), ctx.shape[1], np.int32)
    if req.guidance_lengths is not None:
        lengths = np.asarray(req.guidance_lengths, np.int32).reshape(-1)
    if lengths.shape != (batch,) or (lengths < 0).any() or (lengths > ctx.shape[1]).any():
        raise UserError(f"guidance_lengths must be int[{batch}] in [0, {ctx.shape[1]}]")
    if (lengths > plen).any():
        raise UserError(
            "an unconditional context is longer than its prompt; allowed: at most the prompt's "
            "length (its prompt without the conditioning)"
        )
    live = np.arange(ctx.shape[1])[None, :] < lengths[:, None]
    if live.any() and (ctx[live].min() < 0 or ctx[live].max() >= req.vocab_size):
        raise UserError(f"guidance_prompts has an id outside [0, {req.vocab_size})")
    if live.any() and (ctx[live] == EOS_ID).any():
        raise UserError(f"guidance_prompts contains EOS (id {EOS_ID}); allowed: no EOS")
    width = max(1, ctx.shape[1])
    padded = np.full((batch, width), PAD_ID, np.int32)
    padded[:, : ctx.shape[1]] = np.where(live, ctx, PAD_ID)
    return padded, lengths


def guide(req: DecodeRequest, prep: Prepared) -> DecodeRequest:
    """`req` with its step function guided (`guided_step`), its carry a `GuidedCarry` of two
    copies of `req.init_carry` and its parameters `(params, gamma)`."""
    ctx, lengths = _contexts(req, prep)
    plen = np.asarray(prep.prompt_lengths, np.int32)
    carry = GuidedCarry(
        cond=req.init_carry,
        uncond=req.init_carry,
        context=jnp.asarray(ctx),
        length=jnp.asarray(lengths),
        wait=jnp.asarray(plen - lengths),
        calls=jnp.zeros((prep.batch,), jnp.int32),
    )
    gamma = jnp.asarray(float(get(req.cfg, KNOB)), jnp.float32)
    return replace(
        req, step_fn=guided_step(req.step_fn), params=(req.params, gamma), init_carry=carry
    )
