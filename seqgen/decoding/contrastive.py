"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation",
NeurIPS; Hugging Face `generate(penalty_alpha=..., top_k=...)`).

At each generated position t, with prefix x_<t and the model's representations h_j of every
prefix token (BOS and the prompt included, as Hugging Face keeps the prompt's
`last_hidden_state`), Su et al.'s contrastive search picks

    x_t = argmax_{v in V(k)} (1 - alpha) p(v | x_<t) - alpha max_{j < t} cos(h_v, h_j)

where p is the model's own distribution softmax(logits) (no logits processor applies, unlike
Hugging Face, which runs its processors first), V(k) its k most probable tokens (`decoder.top_k`,
ties broken towards the lower id, as `lax.top_k` and greedy do), alpha in [0, 1] is
`decoder.penalty_alpha`, h_v is the representation of the prefix followed by v (the model's
optional hidden-state output, `seqgen.models.protocol`: an RNN's top-layer h, the
Transformer's last hidden state after its final layer norm), and
cos(a, b) = a.b / (max(|a|, 1e-12) max(|b|, 1e-12)). A candidate whose probability is 0 (a
token the model never predicts, when k exceeds the tokens it does) is never chosen.
alpha = 0 is greedy decoding.

The program: one `jax.jit` around a `lax.scan` over the `max_len` positions (`loop.py`), fixed
buffers only. BOS is fed once before the loop; each step feeds the k candidates of every row
as B * k rows of the step function (a prompt position feeds its forced token k times), and the
chosen candidate's carry, logits and hidden state become the row's, so no step is run twice.
The hidden states of the prefix sit in a [B, max_len + 1, D] buffer (slot 0: BOS, slot t + 1:
the token at t) read under the mask `slot <= t`. Because each candidate is fed to read its
h_v, the carry takes one step past `max_len`: a KV cache is sized `max_len + 1`
(`registry.carry_len`). Deterministic: no key. `scores` are the sequence's log-prob under
the model, as greedy's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from seqgen.decoding.common import (
    DecodeOutput,
    DecodeRequest,
    Prepared,
    gather_rows,
    get,
    hidden_step,
    repeat_rows,
)
from seqgen.decoding.loop import run_loop
from seqgen.decoding.program import ProgramInputs, ProgramOptions
from seqgen.decoding.program import launch as launch_program
from seqgen.decoding.sampling import scan_outputs
from seqgen.errors import UserError
from seqgen.parallel import row_parallel
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID

NORM_EPS = 1e-12  # torch.nn.functional.normalize's floor: a zero vector has cosine 0


@struct.dataclass
class ContrastiveState:
    """The loop state; B rows, T = max_len, D the hidden size."""

    carry: Any  # the step function's carry after the prefix, every leaf [B, ...]
    logits: jax.Array  # [B, V] f32 the model's logits for the next position
    hidden: jax.Array  # [B, T + 1, D] the prefix's hidden states (slot 0 BOS, t + 1 token t)
    ended: jax.Array  # [B] bool the row emitted EOS


def unit(h: jax.Array) -> jax.Array:
    """h / max(|h|, NORM_EPS) along the last axis."""
    return h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), NORM_EPS)


def contrastive_scores(
    probs: jax.Array,  # [B, K] p(v) of the candidates
    cand_hidden: jax.Array,  # [B, K, D] h_v
    prefix_hidden: jax.Array,  # [B, S, D] h_j
    prefix_mask: jax.Array,  # [B, S] bool: slot j holds a prefix state
    alpha: jax.Array,
) -> jax.Array:
    """(1 - alpha) p(v) - alpha max_j cos(h_v, h_j) per candidate [B, K]; -inf where p(v) = 0."""
    cos = jnp.einsum("bkd,bsd->bks", unit(cand_hidden), unit(prefix_hidden))  # [B, K, S]
    cos = jnp.where(prefix_mask[:, None, :], cos, -jnp.inf)
    penalty = jnp.max(cos, axis=-1)  # [B, K]
    return jnp.where(probs > 0, (1.0 - alpha) * probs - alpha * penalty, -jnp.inf)


@row_parallel
def _contrastive_program(args: ProgramInputs, *, opts: ProgramOptions, top_k: int) -> DecodeOutput:
    params, init_carry, prompts, prompt_lengths, _, _, knobs, _ = args
    hidden_fn, max_len, loop = hidden_step(opts.step_fn), opts.max_len, opts.loop
    alpha = knobs["penalty_alpha"]
    b, k = prompt_lengths.shape[0], top_k
    rows = jnp.arange(b)
    carry, h0, logits = hidden_fn(params, init_carry, jnp.full((b,), BOS_ID, jnp.int32))
    buf = jnp.zeros((b, max_len + 1, h0.shape[-1]), jnp.float32).at[:, 0].set(h0)
    state = ContrastiveState(carry, logits.astype(jnp.float32), buf, jnp.zeros((b,), bool))

    def step(state: ContrastiveState, xs: tuple) -> tuple[ContrastiveState, dict]:
        t, forced_tok = xs  # scalar, [B]
        forced = t < prompt_lengths  # [B]
        probs = jax.nn.softmax(state.logits, axis=-1)  # [B, V]
        top_p, top_id = jax.lax.top_k(probs, k)  # [B, K], most probable first
        cand = jnp.where(forced[:, None], forced_tok[:, None], top_id).astype(jnp.int32)
        c_k, h_k, l_k = hidden_fn(params, repeat_rows(state.carry, k), cand.reshape(-1))
        h_k = h_k.astype(jnp.float32).reshape(b, k, -1)  # [B, K, D]
        seen = jnp.broadcast_to(jnp.arange(max_len + 1) <= t, (b, max_len + 1))  # BOS, x_<t
        score = contrastive_scores(top_p, h_k, state.hidden, seen, alpha)
        pick = jnp.where(forced, 0, jnp.argmax(score, axis=-1))  # [B]
        tok = cand[rows, pick]
        flat = rows * k + pick  # the chosen candidate's row among the B * K
        lp = jax.nn.log_softmax(state.logits, axis=-1)[rows, tok]
        ended = state.ended
        is_eos = (tok == EOS_ID) & ~forced & ~ended
        gen = ~forced & ~ended
        hidden = jax.lax.dynamic_update_slice_in_dim(
            state.hidden, h_k[rows, pick][:, None], t + 1, axis=1
        )
        new = ContrastiveState(
            gather_rows(c_k, flat), l_k[flat].astype(jnp.float32), hidden, ended | is_eos
        )
        ys = {
            "tok": jnp.where(ended, PAD_ID, tok),
            "lp": jnp.where(gen, lp, 0.0),
            "alive": ~ended & ~is_eos,
            "eos": is_eos,
        }
        return new, ys

    zeros, false = jnp.zeros((b,), jnp.float32), jnp.zeros((b,), bool)
    idle = {"tok": jnp.full((b,), PAD_ID, jnp.int32), "lp": zeros, "alive": false, "eos": false}
    xs = (jnp.arange(max_len), prompts.T)  # [T], [T, B]
    state, ys = run_loop(step, state, xs, finished=lambda s: jnp.all(s.ended), idle=idle, loop=loop)
    return scan_outputs(ys, state.ended, prompt_lengths, 1)


def launch(req: DecodeRequest, prep: Prepared) -> DecodeOutput:
    """Run contrastive search for a validated request (`registry.run` is the entry path)."""
    hidden_fn = hidden_step(req.step_fn)
    if hidden_fn is None:
        raise UserError(
            "decoder=contrastive needs the model's hidden states, and this step function has "
            "none; allowed: a model with `step_hidden` (rnn, lstm, gru, transformer) or a step "
            "function given one with seqgen.decoding.common.with_hidden"
        )
    top_k = min(int(get(req.cfg, "top_k")), req.vocab_size)
    return launch_program(_contrastive_program, req, prep, keyed=False, top_k=top_k)


def contrastive(req: DecodeRequest) -> DecodeOutput:
    """Contrastive search (Su et al. 2022; the module docstring gives the definition)."""
    from seqgen.decoding.registry import run

    return run("contrastive", req)
